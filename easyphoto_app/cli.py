"""One CLI: ui, doctor, prepare, train, rl, generate, portrait, likeness, export, users.

Exit codes: 0 success; 2 bad input (one line on stderr, no traceback); 1 internal
failure (one line naming the log file, which holds the traceback).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import os
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.precision import CHOICES as PRECISIONS
from easyphoto_app.settings import (
    FaceConfig,
    GenerateConfig,
    PortraitConfig,
    RLConfig,
    Settings,
    TrainConfig,
    add_config_args,
    apply_config_args,
    load_settings,
    resolve_data_dir,
)
from easyphoto_app.workspace import Workspace, validate_user_id

log = logging.getLogger("easyphoto")
COMMANDS = {}


def command(name: str, help: str):
    def register(fn):
        COMMANDS[name] = (fn, help)
        return fn

    return register


def _global_parser() -> argparse.ArgumentParser:
    """Global options, accepted before or after the command (default SUPPRESS keeps either)."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("global options")
    g.add_argument(
        "--data-dir", default=argparse.SUPPRESS, help="Data folder (default: EASYPHOTO_HOME or the user data folder)."
    )
    g.add_argument(
        "--model", default=argparse.SUPPRESS, help="Base model: hub id, diffusers folder, .safetensors file, or 'demo'."
    )
    g.add_argument(
        "--device", default=argparse.SUPPRESS, choices=["auto", "cuda", "mps", "cpu"], help="Compute device."
    )
    g.add_argument(
        "--precision",
        default=argparse.SUPPRESS,
        choices=PRECISIONS,
        help="Number format (auto: bf16 or fp16 on a GPU, fp32 on the CPU).",
    )
    g.add_argument("--events", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # JSON-lines stream for the UI
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _global_parser()
    parser = argparse.ArgumentParser(
        prog="easyphoto", description="EasyPhoto: AI portraits of one person, locally.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subs = {name: sub.add_parser(name, help=help, parents=[common]) for name, (_, help) in COMMANDS.items()}

    p = subs["ui"]
    p.add_argument("--host", default=None, help="Bind address (default 127.0.0.1). Anything else needs --auth.")
    p.add_argument("--port", type=int, default=None, help="Port (default 7860).")
    p.add_argument("--listen", action="store_true", help="Bind 0.0.0.0 for other machines (requires --auth).")
    p.add_argument("--auth", default=None, metavar="USER:PASS", help="Ask for this user name and password.")
    p.add_argument("--no-browser", action="store_true", help="Do not open the browser.")

    subs["doctor"].add_argument("--json", action="store_true", help="Machine-readable output.")

    p = subs["prepare"]
    p.add_argument("--user", required=True, help="User id (ASCII letters, digits, _ and -).")
    p.add_argument("paths", nargs="*", help="Photo files or folders (none: re-check the photos already added).")
    p.add_argument(
        "--remove", nargs="+", default=None, metavar="NAME", help="Remove these photos (by file name) and re-check."
    )
    p.add_argument("--json", action="store_true", help="Print faces.json instead of a table.")
    add_config_args(p, FaceConfig)

    p = subs["train"]
    p.add_argument("--user", required=True)
    p.add_argument("--resume", action="store_true", help="Continue from the last checkpoint.")
    add_config_args(p, TrainConfig)

    p = subs["rl"]
    p.add_argument("--user", required=True)
    p.add_argument("--resume", action="store_true", help="Continue from the last complete epoch.")
    add_config_args(p, RLConfig)

    p = subs["generate"]
    p.add_argument("--user", default=None, help="Use this user's face LoRA (and RL LoRA).")
    p.add_argument("--no-rl", action="store_true", help="Face LoRA only, without the RL LoRA.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    add_config_args(p, GenerateConfig)

    p = subs["portrait"]
    p.add_argument("--user", default=None, help="Whose face (their face LoRA, and RL LoRA unless --no-rl).")
    p.add_argument(
        "--template", required=True, help="The photo to paint the face into (a path, or a name in templates/)."
    )
    p.add_argument(
        "--face",
        action="append",
        default=[],
        metavar="FACE=USER",
        help="Several people: paint USER on face FACE (numbered from 0, from the left), e.g. --face 0=anna "
        "--face 1=ben; other faces are kept as they are. A --user given too goes on --face-index.",
    )
    p.add_argument("--no-rl", action="store_true", help="Face LoRA only, without the RL LoRA.")
    p.add_argument("--json", action="store_true", help="Print the result as JSON.")
    add_config_args(p, PortraitConfig)
    add_config_args(
        p,
        GenerateConfig,
        only=[
            "prompt",
            "negative_prompt",
            "num_inference_steps",
            "guidance_scale",
            "scheduler",
            "lora_weight",
            "rl_weight",
            "ip_scale",
        ],
    )

    p = subs["likeness"]
    p.add_argument("--user", required=True)
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="Images made anywhere (EasyPhoto, A1111, ComfyUI, photos)."
    )
    p.add_argument("--json", action="store_true", help="Print JSON.")

    p = subs["export"]
    p.add_argument("--user", required=True)
    p.add_argument("--out", default=None, help="Zip file to write (default: exports/ in the data dir).")

    p = subs["users"]
    p.add_argument("action", nargs="?", default="list", choices=["list", "delete"])
    p.add_argument("user", nargs="?", default=None)
    return parser


def setup_logging(data_dir: Path) -> Path:
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / "easyphoto.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.WARNING)
    console.setFormatter(logging.Formatter("warning: %(message)s"))
    logging.getLogger("easyphoto_app").addHandler(console)
    return path


def quiet_libraries() -> None:
    """Library chatter is noise for our users; the log file keeps what matters."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="diffusers|transformers|peft|torch|insightface")


def make_settings(args) -> Settings:
    settings = load_settings(resolve_data_dir(getattr(args, "data_dir", None)))
    for key in ("model", "device", "precision"):
        if getattr(args, key, None):
            setattr(settings.app, key, getattr(args, key))
    apply_config_args(settings, args)
    return settings


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    log_path = None
    try:
        settings = make_settings(args)
        log_path = setup_logging(settings.data_dir)
        log.info("command %s %s", args.command, argv if argv is not None else sys.argv[1:])
        return COMMANDS[args.command][0](settings, args) or 0
    except UserError as exc:
        log.info("refused: %s", exc)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stopped.", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns a crash into a message
        log.exception("internal error in %s", args.command)
        where = f" (details in {log_path})" if log_path else ""
        print(f"internal error: {type(exc).__name__}: {exc}{where}", file=sys.stderr)
        return 1


def reporter_for(args, desc: str, default_events: Path | None = None):
    from easyphoto_app.jobs import Reporter, TqdmListener

    events = getattr(args, "events", None) or default_events
    reporter = Reporter(events, [TqdmListener(desc)])
    reporter.stop_on_signals()
    return reporter


# ----------------------------------------------------------------------------- commands


@command("ui", "Start the web UI (what run.sh / run.bat do).")
def cmd_ui(settings: Settings, args) -> int:
    from easyphoto_app.ui.app import launch

    host = args.host or ("0.0.0.0" if args.listen else settings.app.host)
    auth = None
    if args.auth:
        user, sep, password = args.auth.partition(":")
        if not sep or not user or not password:
            raise UserError("--auth must look like USER:PASS.")
        auth = (user, password)
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        raise UserError(f"Refusing to listen on {host} without a password: add --auth USER:PASS.")
    launch(
        settings,
        host=host,
        port=args.port or settings.app.port,
        auth=auth,
        open_browser=settings.app.open_browser and not args.no_browser,
    )
    return 0


@command("doctor", "Check Python, GPU, disk, models; print the fix for each problem.")
def cmd_doctor(settings: Settings, args) -> int:
    from easyphoto_app import doctor

    report = doctor.check(settings)
    print(json.dumps(report, indent=2) if args.json else doctor.render(report))
    return 0


@command("generate", "Generate portraits (with a user's LoRAs when --user is given).")
def cmd_generate(settings: Settings, args) -> int:
    from easyphoto_app.generate import generate, plan_loras
    from easyphoto_app.model_defaults import model_defaults
    from easyphoto_app.pipeline_cache import PipelineCache

    ws = Workspace(settings.data_dir)
    user = ws.require_user(args.user) if args.user else None
    plan_loras(ws, settings.generate, user, not args.no_rl)
    loaded = PipelineCache().get(settings)
    model = loaded.model
    if model.is_demo:
        print(f"note: {model.note or model.label}", file=sys.stderr)
    reporter = reporter_for(args, "generate")
    gen = model_defaults(settings.generate, model, settings.given_in("generate"))  # SDXL: 1024 px unless set
    result = generate(
        loaded,
        ws,
        gen,
        user=user,
        use_rl=not args.no_rl,
        progress=reporter.progress,
        should_stop=reporter.should_stop,
    )
    if result.note:
        print(f"note: {result.note}", file=sys.stderr)
    reporter.done(f"{len(result.paths)} image(s)", paths=[str(p) for p in result.paths])
    if args.json:
        print(
            json.dumps(
                {
                    "paths": [str(p) for p in result.paths],
                    "seeds": result.seeds,
                    "seconds": round(result.seconds, 3),
                    "mode": result.mode,
                }
            )
        )
    else:
        for path, seed in zip(result.paths, result.seeds):
            print(f"{path}  (seed {seed})")
    return 0


@command("portrait", "Paint a user's face into a template photo; candidates ranked by likeness.")
def cmd_portrait(settings: Settings, args) -> int:
    from easyphoto_app.device import pick_device
    from easyphoto_app.faces import get_backend
    from easyphoto_app.group import main_and_others, parse_faces
    from easyphoto_app.model_defaults import model_defaults
    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.portrait import paint, plan, resolve_template

    ws = Workspace(settings.data_dir)
    user, settings.portrait.face_index, others = main_and_others(
        args.user, settings.portrait.face_index, parse_faces(args.face)
    )
    user = ws.require_user(user)
    backend = get_backend(settings.faces.backend, settings.data_dir)
    job = plan(
        ws,
        settings.generate,
        settings.portrait,
        user,
        resolve_template(ws, args.template),
        backend,
        not args.no_rl,
        pick_device(settings.app.device),
        others,
    )
    loaded = PipelineCache().get(settings)
    model = loaded.model
    job.gen = model_defaults(job.gen, model, settings.given_in("generate"))
    if model.is_demo:
        print(f"note: {model.note or model.label}", file=sys.stderr)
    reporter = reporter_for(args, "portrait")
    result = paint(loaded, ws, job, progress=reporter.progress, should_stop=reporter.should_stop)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    reporter.done(f"{len(result.paths)} portrait(s)", paths=[str(p) for p in result.paths])
    if args.json:
        print(
            json.dumps(
                {
                    "paths": [str(p) for p in result.paths],
                    "seeds": result.seeds,
                    "likeness": result.likeness,
                    "face_index": result.face_index,
                    "faces": result.faces,
                    "people": result.people,
                    "box": result.box,
                    "seconds": round(result.seconds, 3),
                }
            )
        )
    else:
        for path, seed, value in zip(result.paths, result.seeds, result.likeness):
            print(f"{path}  (seed {seed}, likeness {'none' if value is None else f'{value:.2f}'})")
    return 0


@command("prepare", "Add photos for a user, find and check the faces.")
def cmd_prepare(settings: Settings, args) -> int:
    from easyphoto_app.faces.prepare import format_table, prepare

    ws = Workspace(settings.data_dir)
    user = validate_user_id(args.user)
    reporter = reporter_for(args, "faces")
    record = prepare(
        ws, user, [Path(p) for p in args.paths], settings.faces, remove=args.remove or [], progress=reporter.progress
    )
    reporter.done(f"{record.accepted_count} face(s) accepted")
    print(json.dumps(record.to_json(), indent=2) if args.json else format_table(record))
    return 0


def _gpu_job(settings: Settings, args, kind: str, run, trainer, data_parallel: bool = False) -> int:
    """train and rl: one GPU job at a time, events beside the job's checkpoints, result line on stdout; a failure
    (a refusal too) reported once, in `trainer`'s words."""
    from easyphoto_app.device import pick_device
    from easyphoto_app.jobs import JOB_NAMES, GpuLock, Reporter, check_can_start
    from easyphoto_app.trainer import failure_reported

    ws = Workspace(settings.data_dir)
    user = validate_user_id(args.user)
    # WORLD_SIZE is read before PartialState, which would wait for the other processes; accelerate (and torch) are
    # imported only under a launcher, so that a refused or busy start answers at once.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from accelerate import PartialState

        if not data_parallel:
            raise UserError(
                f"'{kind}' runs on one GPU: start it without accelerate launch / torchrun (only 'rl' is data-parallel)."
            )
        # PartialState joins the launch and binds this process's own GPU (LOCAL_RANK): "cuda" needs no index after
        if not PartialState(cpu=pick_device(settings.app.device) == "cpu").is_main_process:
            # rank 0 holds the lock, writes the events and prints the result
            run(settings, ws, user, Reporter(), resume=args.resume)
            return 0
    check_can_start(ws, kind, user)  # before anything is written: an unknown user leaves no folder behind
    reporter = reporter_for(args, kind, ws.job_events(kind, user))
    with failure_reported(reporter, trainer), GpuLock(ws, JOB_NAMES[kind], user):
        result = run(settings, ws, user, reporter, resume=args.resume)
    print(result.message)
    return 0


@command("train", "Train the face LoRA from the prepared faces.")
def cmd_train(settings: Settings, args) -> int:
    from easyphoto_app.lora_train import FaceLoraTrainer, train

    return _gpu_job(settings, args, "train", train, FaceLoraTrainer)


@command("rl", "Improve likeness with reinforcement learning (DDPO), within a time budget.")
def cmd_rl(settings: Settings, args) -> int:
    # RL's modules load torch when imported: they are imported once the job may run, so that a busy or refused
    # start answers at once (eight starters at once on 2 cores: seconds, not minutes).
    def run_rl(*args, **kwargs):
        from easyphoto_app.ddpo.job import run_rl

        return run_rl(*args, **kwargs)

    def rl_run():
        from easyphoto_app.ddpo.loop import RLRun

        return RLRun

    return _gpu_job(settings, args, "rl", run_rl, rl_run, data_parallel=True)


@command(
    "likeness",
    "Score images: how much each face looks like the user (0 stranger, 0.5 threshold, 1 as alike as their own photos).",
)
def cmd_likeness(settings: Settings, args) -> int:
    from easyphoto_app.faces.images import BadImage, load_rgb
    from easyphoto_app.faces.likeness import Score, scorer_for

    ws = Workspace(settings.data_dir)
    user = ws.require_user(args.user)
    scorer = scorer_for(ws, user)  # the same scorer as the RL reward and Compare
    rows = []
    for path in args.images:
        try:
            score = scorer.score(load_rgb(Path(path), settings.faces.max_side))
        except BadImage as exc:
            score = Score(None, None, 0, None, str(exc))
        rows.append({"image": path, **asdict(score)})
    if args.json:
        print(
            json.dumps(
                {"user": user, "backend": scorer.backend.name, "scale": scorer.scale(), "images": rows}, indent=2
            )
        )
    else:
        for r in rows:
            value = "  -  " if r["likeness"] is None else f"{r['likeness']:.3f}"
            print(f"{value}  {r['image']}  ({r['reason']})")
    return 0


@command("export", "Zip a user's images with a manifest of their parameters.")
def cmd_export(settings: Settings, args) -> int:
    from easyphoto_app.gallery import export_zip

    ws = Workspace(settings.data_dir)
    path = export_zip(ws, validate_user_id(args.user), out=Path(args.out) if args.out else None)
    print(path)
    return 0


@command("users", "List users, or delete one with all their files.")
def cmd_users(settings: Settings, args) -> int:
    ws = Workspace(settings.data_dir)
    if args.action == "delete":
        ws.delete_user(validate_user_id(args.user))
        print(f"deleted {args.user}")
        return 0
    for user in ws.list_users():
        marks = [m for m, f in (("lora", ws.face_lora(user)), ("rl", ws.ddpo_lora(user))) if f.exists()]
        print(f"{user}\t{' '.join(marks)}")
    return 0
