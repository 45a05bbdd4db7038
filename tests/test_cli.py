"""The CLI in this process: parsing, each command's wiring, exit codes and messages. The end-to-end runs, as child
processes, are in the other test files; these are fast enough to run after every small change."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import types
import zipfile
from pathlib import Path

import pytest
from conftest import gpu_lock_held

from easyphoto_app import cli
from easyphoto_app.errors import UserError
from easyphoto_app.workspace import Workspace

HELP = Path(__file__).with_name("cli_help.txt")


pytestmark = pytest.mark.usefixtures("cli_process_state")


@pytest.fixture
def home(tmp_path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    (d / "settings.toml").write_text('[app]\nmodel = "demo"\n')
    return d


def add_user(home: Path, user: str, lora: bool = False, rl: bool = False) -> None:
    ws = Workspace(home)
    ws.user_dir(user).mkdir(parents=True)
    ws.loras_dir.mkdir(exist_ok=True)
    for wanted, path in ((lora, ws.face_lora(user)), (rl, ws.ddpo_lora(user))):
        if wanted:
            path.write_bytes(b"weights")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_every_help_page_reads_as_reviewed(capsys, monkeypatch):
    """The help is the CLI's manual: any change to it (a flag, a default, a word) is made on purpose, here."""
    monkeypatch.setenv("COLUMNS", "100")
    pages = []
    for argv in ([], *([name] for name in cli.COMMANDS)):
        with pytest.raises(SystemExit) as stop:
            cli.main([*argv, "--help"])
        assert stop.value.code == 0
        pages.append(f"$ easyphoto {' '.join([*argv, '--help'])}\n{capsys.readouterr().out}")
    text = "\n".join(pages)
    if os.environ.get("EASYPHOTO_UPDATE_HELP"):
        HELP.write_text(text, encoding="utf-8")
    assert text == HELP.read_text(encoding="utf-8"), (
        "the help changed: read the difference, then accept it with EASYPHOTO_UPDATE_HELP=1"
    )


def test_no_command_prints_the_help_and_exits_0(capsys):
    code, out, err = run(capsys)
    assert code == 0 and out.startswith("usage: easyphoto") and "Generate portraits" in out and err == ""


def test_global_options_go_before_or_after_the_command(home, tmp_path, capsys):
    add_user(home, "anna", lora=True)
    add_user(home, "bob", lora=True, rl=True)
    add_user(home, "carl")
    (Workspace(home).users_dir / "not valid").mkdir()
    for argv in (["--data-dir", home, "users"], ["users", "--data-dir", home], ["users", "list", "--data-dir", home]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and out == "anna\tlora\nbob\tlora rl\ncarl\t\n"


def test_model_device_and_precision_flags_win_over_the_settings_file_only_when_given(home):
    (home / "settings.toml").write_text(
        '[app]\nmodel = "demo"\ndevice = "cpu"\nprecision = "fp32"\n\n[train]\nmax_train_steps = 7\n'
    )
    parser = cli.build_parser()
    kept = cli.make_settings(parser.parse_args(["--data-dir", str(home), "train", "--user", "a"]))
    assert (kept.app.model, kept.app.device, kept.app.precision, kept.train.max_train_steps) == (
        "demo",
        "cpu",
        "fp32",
        7,
    )
    given = cli.make_settings(
        parser.parse_args(
            [
                "train",
                "--user",
                "a",
                "--model",
                "x/y",
                "--device",
                "cuda",
                "--precision",
                "bf16",
                "--max-train-steps",
                "9",
                "--data-dir",
                str(home),
            ]
        )
    )
    assert (given.app.model, given.app.device, given.app.precision, given.train.max_train_steps) == (
        "x/y",
        "cuda",
        "bf16",
        9,
    )
    assert given.data_dir == home


def test_a_refusal_is_one_error_line_and_exit_2_and_the_log_says_why(home, capsys):
    code, out, err = run(capsys, "--data-dir", home, "users", "delete", "../etc")
    assert code == 2 and out == ""
    assert err.startswith("error: User id '../etc' is not allowed") and err.count("\n") == 1
    log = (home / "logs" / "easyphoto.log").read_text()
    assert "INFO easyphoto: command users ['--data-dir'," in log and "refused: User id '../etc'" in log
    assert f" {os.getpid()} " in log  # which process wrote it: the UI and its jobs share the file


def test_a_crash_is_one_line_that_names_the_log_which_holds_the_traceback(home, capsys, monkeypatch):
    add_user(home, "anna")

    def broken(*_, **__):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("easyphoto_app.gallery.export_zip", broken)
    code, out, err = run(capsys, "--data-dir", home, "export", "--user", "anna")
    log_path = home / "logs" / "easyphoto.log"
    assert code == 1 and out == ""
    assert err == f"internal error: RuntimeError: disk on fire (details in {log_path})\n"
    log = log_path.read_text()
    assert "ERROR easyphoto: internal error in export" in log and "Traceback" in log and "disk on fire" in log


def test_a_crash_before_the_log_exists_names_no_log(capsys, monkeypatch):
    def broken(_args):
        raise RuntimeError("no settings")

    monkeypatch.setattr(cli, "make_settings", broken)
    assert run(capsys, "users") == (1, "", "internal error: RuntimeError: no settings\n")


def test_ctrl_c_outside_a_job_exits_130(home, capsys, monkeypatch):
    def interrupted(*_, **__):
        raise KeyboardInterrupt

    monkeypatch.setattr(Workspace, "list_users", interrupted)
    assert run(capsys, "--data-dir", home, "users") == (130, "", "stopped.\n")


def test_the_log_rotates_and_only_warnings_reach_the_console(tmp_path, capsys):
    path = cli.setup_logging(tmp_path)
    assert path == tmp_path / "logs" / "easyphoto.log"
    rotating = [h for h in logging.getLogger().handlers if getattr(h, "baseFilename", None) == str(path)]
    assert [(h.maxBytes, h.backupCount) for h in rotating] == [(2_000_000, 3)]  # at most 8 MB of logs
    logging.getLogger("easyphoto_app.test").info("step 3 of 9")
    logging.getLogger("easyphoto_app.test").warning("the disk is nearly full")
    logging.getLogger("some.library").warning("library chatter")  # in the file, not on the console
    for h in rotating:
        h.flush()
    assert capsys.readouterr().err == "warning: the disk is nearly full\n"
    text = path.read_text(encoding="utf-8")
    assert "INFO easyphoto_app.test: step 3 of 9" in text and "WARNING some.library: library chatter" in text


def test_library_chatter_is_turned_off_unless_the_user_asked_for_it(monkeypatch):
    names = ["GRADIO_ANALYTICS_ENABLED", "HF_HUB_DISABLE_TELEMETRY", "TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"]
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DIFFUSERS_VERBOSITY", "debug")
    cli.quiet_libraries()
    assert [os.environ[n] for n in names] == ["False", "1", "error", "debug"]


@pytest.fixture
def launched(monkeypatch):
    """The web UI's launch, recorded instead of started."""
    calls = []
    fake = types.ModuleType("easyphoto_app.ui.app")
    fake.launch = lambda settings, **kw: calls.append(kw)
    monkeypatch.setitem(sys.modules, "easyphoto_app.ui.app", fake)
    return calls


@pytest.mark.parametrize(
    "flags, settings_toml, expected",
    [
        ([], "", dict(host="127.0.0.1", port=7860, auth=None, open_browser=True)),
        (["--port", "9001", "--no-browser"], "", dict(host="127.0.0.1", port=9001, auth=None, open_browser=False)),
        (
            ["--listen", "--auth", "ann:se:cret"],
            "",
            dict(host="0.0.0.0", port=7860, auth=("ann", "se:cret"), open_browser=True),
        ),
        (
            ["--host", "localhost"],
            "port = 7000\nopen_browser = false\n",
            dict(host="localhost", port=7000, auth=None, open_browser=False),
        ),
        (["--host", "::1"], "", dict(host="::1", port=7860, auth=None, open_browser=True)),
        (
            ["--host", "192.168.1.5", "--auth", "a:b"],
            "",
            dict(host="192.168.1.5", port=7860, auth=("a", "b"), open_browser=True),
        ),
    ],
)
def test_ui_binds_this_machine_unless_told_and_asked_for_a_password(
    home, capsys, launched, flags, settings_toml, expected
):
    (home / "settings.toml").write_text(f'[app]\nmodel = "demo"\n{settings_toml}')
    assert run(capsys, "--data-dir", home, "ui", *flags) == (0, "", "")
    assert launched == [expected]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--listen"], "error: Refusing to listen on 0.0.0.0 without a password: add --auth USER:PASS.\n"),
        (["--host", "10.0.0.2"], "error: Refusing to listen on 10.0.0.2 without a password: add --auth USER:PASS.\n"),
        (["--listen", "--auth", "annsecret"], "error: --auth must look like USER:PASS.\n"),
        (["--listen", "--auth", ":secret"], "error: --auth must look like USER:PASS.\n"),
        (["--auth", "ann:"], "error: --auth must look like USER:PASS.\n"),
    ],
)
def test_ui_refuses_other_machines_without_a_password(home, capsys, launched, flags, message):
    assert run(capsys, "--data-dir", home, "ui", *flags) == (2, "", message)
    assert launched == []


def test_doctor_prints_the_report_or_json(home, capsys, monkeypatch):
    from easyphoto_app import doctor

    report = {
        "ok": False,
        "data_dir": str(home),
        "checks": {"disk": {"ok": False, "value": "3 GB free", "fix": "Free 12 GB."}},
    }
    monkeypatch.setattr(doctor, "check", lambda settings: report)
    code, out, _ = run(capsys, "--data-dir", home, "doctor", "--json")
    assert code == 0 and json.loads(out) == report
    code, out, _ = run(capsys, "--data-dir", home, "doctor")
    assert code == 0 and out == doctor.render(report) + "\n"


def test_users_delete_takes_every_file_of_that_user_only(home, capsys):
    add_user(home, "anna", lora=True, rl=True)
    add_user(home, "bob", lora=True)
    assert run(capsys, "--data-dir", home, "users", "delete", "anna") == (0, "deleted anna\n", "")
    assert run(capsys, "--data-dir", home, "users") == (0, "bob\tlora\n", "")
    assert run(capsys, "--data-dir", home, "users", "delete", "anna")[0] == 2


def test_export_writes_the_zip_where_asked_or_in_exports(home, tmp_path, capsys):
    from PIL import Image

    add_user(home, "anna")
    day = Workspace(home).outputs_dir("anna") / "2026-11-26"
    day.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(day / "a.png")
    code, out, _ = run(capsys, "--data-dir", home, "export", "--user", "anna", "--out", tmp_path / "mine.zip")
    assert code == 0 and out == f"{tmp_path / 'mine.zip'}\n"
    assert sorted(zipfile.ZipFile(tmp_path / "mine.zip").namelist()) == [
        "2026-11-26/a.png",
        "manifest.csv",
        "manifest.json",
    ]
    code, out, _ = run(capsys, "--data-dir", home, "export", "--user", "anna")
    assert code == 0 and Path(out.strip()).parent == home / "exports" and Path(out.strip()).is_file()
    code, _, err = run(capsys, "--data-dir", home, "export", "--user", "nobody")
    assert code == 2 and "nobody" in err


# ----------------------------------------------------------------------------- train and rl: one GPU job at a time


class Ran:
    """A stand-in for train/run_rl that records how it was called and what the GPU lock said meanwhile."""

    def __init__(self, outcome=None):
        self.outcome, self.calls = outcome, []

    def __call__(self, settings, ws, user, reporter, resume=False):
        lock = ws.jobs_dir / "gpu.json"  # the lock holder's note
        self.calls.append(
            {
                "user": user,
                "resume": resume,
                "events": reporter.events_path,
                "lock": json.loads(lock.read_text()) if lock.exists() else None,
                "max_train_steps": settings.train.max_train_steps,
            }
        )
        if isinstance(self.outcome, Exception):
            raise self.outcome
        reporter.log(f"training {user}")  # shown on the console as well as in the events
        reporter.done("trained")
        return types.SimpleNamespace(message=f"saved {user}")


def prepared(home: Path, user: str) -> Workspace:
    add_user(home, user)
    ws = Workspace(home)
    ws.faces_dir(user).mkdir(parents=True)
    (ws.faces_dir(user) / "faces.json").write_text("{}")
    return ws


def test_train_holds_the_gpu_lock_writes_events_beside_its_checkpoints_and_prints_the_result(home, capsys, monkeypatch):
    ws = prepared(home, "anna")
    fake = Ran()
    monkeypatch.setattr("easyphoto_app.lora_train.train", fake)
    code, out, _ = run(capsys, "--data-dir", home, "train", "--user", "anna", "--resume", "--max-train-steps", "5")
    assert (code, out) == (0, "training anna\nsaved anna\n")
    [call] = fake.calls
    assert call["user"] == "anna" and call["resume"] is True and call["max_train_steps"] == 5
    assert call["events"] == ws.job_events("train", "anna")
    assert call["lock"]["pid"] == os.getpid() and (call["lock"]["kind"], call["lock"]["user"]) == ("training", "anna")
    assert not (ws.jobs_dir / "gpu.json").exists()  # given back
    assert signal.getsignal(signal.SIGINT).__self__.events_path == call["events"]  # Ctrl+C asks that job to stop


def test_the_ui_names_the_events_file_a_job_writes(home, tmp_path, capsys, monkeypatch):
    prepared(home, "anna")
    fake = Ran()
    monkeypatch.setattr("easyphoto_app.lora_train.train", fake)
    events = tmp_path / "ui" / "job-7.jsonl"
    assert run(capsys, "--data-dir", home, "train", "--user", "anna", "--events", events)[0] == 0
    assert fake.calls[0]["events"] == events
    assert [json.loads(e)["type"] for e in events.read_text().splitlines()] == ["log", "done"]


def test_rl_takes_its_own_events_file_and_lock_name(home, capsys, monkeypatch):
    ws = Workspace(home)
    add_user(home, "anna", lora=True)
    fake = Ran()
    monkeypatch.setattr("easyphoto_app.ddpo.job.run_rl", fake)
    assert run(capsys, "--data-dir", home, "rl", "--user", "anna") == (0, "training anna\nsaved anna\n", "")
    [call] = fake.calls
    assert call["events"] == ws.job_events("rl", "anna") and call["lock"]["kind"] == "RL" and call["resume"] is False


def test_a_refusal_inside_the_job_reaches_the_ui_as_a_refusal(home, capsys, monkeypatch):
    ws = prepared(home, "anna")
    monkeypatch.setattr("easyphoto_app.lora_train.train", Ran(UserError("Lower the rank.")))
    assert run(capsys, "--data-dir", home, "train", "--user", "anna") == (2, "", "error: Lower the rank.\n")
    events = [json.loads(line) for line in ws.job_events("train", "anna").read_text().splitlines()]
    assert (
        events[-1]["type"] == "failed" and events[-1]["message"] == "Lower the rank." and events[-1]["refused"] is True
    )


@pytest.mark.parametrize(
    "error, code, message, refused",
    [
        (UserError("Lower the rank."), 2, "Lower the rank.", True),
        (RuntimeError("boom"), 1, "Training failed: RuntimeError: boom", None),
    ],
)
def test_a_failing_job_is_reported_once_in_the_trainers_words(home, capsys, monkeypatch, error, code, message, refused):
    ws = prepared(home, "anna")
    monkeypatch.setattr("easyphoto_app.lora_train.train", Ran(error))
    assert run(capsys, "--data-dir", home, "train", "--user", "anna")[0] == code
    events = [json.loads(e) for e in ws.job_events("train", "anna").read_text().splitlines()]
    assert [(e["type"], e["message"], e.get("refused")) for e in events] == [("failed", message, refused)]


def test_a_second_gpu_job_is_refused_with_who_holds_the_gpu(home, capsys, monkeypatch):
    ws = prepared(home, "anna")
    fake = Ran()
    monkeypatch.setattr("easyphoto_app.lora_train.train", fake)
    with gpu_lock_held(home, "RL", "bob"):
        code, out, err = run(capsys, "--data-dir", home, "train", "--user", "anna")
    assert (code, out, fake.calls) == (2, "", [])
    assert err.startswith("error: The RL job for 'bob' is already running")
    last = json.loads(ws.job_events("train", "anna").read_text().splitlines()[-1])
    assert last["type"] == "failed" and last["refused"] is True and "bob" in last["message"]


@pytest.mark.parametrize(
    "kind, make, message",
    [
        ("train", lambda home: add_user(home, "anna"), "'anna' has no checked photos yet"),
        ("rl", lambda home: add_user(home, "anna"), "'anna' has no face LoRA yet"),
        ("train", lambda home: None, "anna"),
    ],
)
def test_a_job_that_cannot_start_writes_nothing(home, capsys, monkeypatch, kind, make, message):
    make(home)
    before = sorted(p.relative_to(home) for p in home.rglob("*") if "logs" not in p.parts)
    monkeypatch.setattr("easyphoto_app.lora_train.train", Ran())
    code, _, err = run(capsys, "--data-dir", home, kind, "--user", "anna")
    assert code == 2 and message in err
    assert sorted(p.relative_to(home) for p in home.rglob("*") if "logs" not in p.parts) == before


def test_under_torchrun_only_rl_runs_and_only_rank_0_locks_and_reports(home, capsys, monkeypatch):
    ws = Workspace(home)
    add_user(home, "anna", lora=True)
    prepared(home, "bob")
    fake = Ran()
    monkeypatch.setattr("easyphoto_app.ddpo.job.run_rl", fake)
    monkeypatch.setattr("easyphoto_app.lora_train.train", fake)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    # accelerate's own state as a launch gives it (the real two-process run: test_rl's data-parallel test)
    monkeypatch.setattr(
        "accelerate.PartialState", lambda cpu: types.SimpleNamespace(is_main_process=os.environ["RANK"] == "0")
    )
    code, _, err = run(capsys, "--data-dir", home, "train", "--user", "bob")
    assert code == 2 and err == (
        "error: 'train' runs on one GPU: start it without accelerate launch / torchrun (only 'rl' is data-parallel).\n"
    )
    assert run(capsys, "--data-dir", home, "rl", "--user", "anna", "--resume") == (0, "", "")  # no console either
    assert fake.calls[-1]["lock"] is None and fake.calls[-1]["events"] is None and fake.calls[-1]["resume"] is True
    assert not ws.job_events("rl", "anna").exists()
    monkeypatch.setenv("RANK", "0")
    assert run(capsys, "--data-dir", home, "rl", "--user", "anna") == (0, "training anna\nsaved anna\n", "")
    assert fake.calls[-1]["lock"]["kind"] == "RL" and fake.calls[-1]["events"] == ws.job_events("rl", "anna")


# ----------------------------------------------------------------------------- commands that use the models


@pytest.fixture
def pipeline_of(demo_pipe, monkeypatch):
    """PipelineCache.get answers with the loaded demo (labelled demo), and records which settings asked: the CLI's
    model loading is tested in test_models."""
    from easyphoto_app.demo_model import DEMO
    from easyphoto_app.model_loading import ResolvedModel
    from easyphoto_app.pipeline_cache import PipelineCache

    asked = []

    def get(self, settings):
        asked.append(settings.app.model)
        monkeypatch.setattr(demo_pipe, "model", ResolvedModel(DEMO, settings.app.model, demo_pipe.model.path))
        return demo_pipe

    monkeypatch.setattr(PipelineCache, "get", get)
    return asked


def test_generate_prints_each_image_with_its_seed_or_json_and_labels_the_demo(rl_copy, capsys, pipeline_of):
    from PIL import Image
    from tiny_model import LABEL

    code, out, err = run(
        capsys,
        "--data-dir",
        rl_copy,
        "generate",
        "--user",
        "astro",
        "--seed",
        "5",
        "--num",
        "2",
        "--num-inference-steps",
        "2",
        "--json",
    )
    assert code == 0 and pipeline_of == ["demo"]
    result = json.loads(out)
    assert result["seeds"] == [5, 6] and len(result["paths"]) == 2 and result["seconds"] > 0
    assert err.startswith(f"note: {LABEL}\n")
    for path in result["paths"]:
        params = Image.open(path).text["parameters"]
        assert (
            "<lora:astro:1> <lora:ddpo_astro:1>" in params and "Model: EasyPhoto demo model," in params
        )  # said in the file too
    code, out, _ = run(
        capsys,
        "--data-dir",
        rl_copy,
        "generate",
        "--user",
        "astro",
        "--seed",
        "9",
        "--num-inference-steps",
        "2",
        "--no-rl",
    )
    path, _, seed = out.rstrip("\n").partition("  ")
    assert code == 0 and seed == "(seed 9)" and out.count("\n") == 1
    params = Image.open(path).text["parameters"]
    assert "<lora:astro:1>" in params and "ddpo_astro" not in params


@pytest.mark.parametrize(
    "args, says",
    [
        (["--user", "nobody"], "error: No user 'nobody'"),
        (["--user", "newbie"], "error: User 'newbie' has no face LoRA yet: train it first (Photos & Training"),
        (["--prompt", "a portrait <lora:nobody:1>"], "error: Unknown LoRA nobody in the prompt; available: anna."),
        (["--prompt", "a portrait <lora:anna:x>"], "error: Malformed LoRA tag '<lora:anna:x>'"),
        (["--user", "anna", "--style", "Baroque"], "error: Unknown style 'Baroque'"),
    ],
)
def test_a_generation_that_cannot_run_is_refused_before_a_model_loads(home, capsys, pipeline_of, args, says):
    """Loading a model takes minutes on a first run: a mistake in the request is said before that."""
    add_user(home, "newbie")
    add_user(home, "anna", lora=True)
    code, out, err = run(capsys, "--data-dir", home, "generate", *args, "--num-inference-steps", "2")
    assert (code, out, pipeline_of) == (2, "", []) and err.startswith(says) and err.count("\n") == 1, err


def test_portrait_prints_each_candidate_with_its_seed_and_likeness_or_json(rl_copy, capsys, pipeline_of, tmp_path):
    import photos
    from PIL import Image

    scene = photos.scene(tmp_path / "scene.jpg")
    # without fusion: the tiny model's noise has no face, so the printing of "none" is seen (fusion: test_fusion.py)
    code, out, err = run(
        capsys,
        "--data-dir",
        rl_copy,
        "portrait",
        "--user",
        "astro",
        "--template",
        scene,
        "--num",
        "2",
        "--seed",
        "3",
        "--num-inference-steps",
        "4",
        "--no-fusion",
        "--json",
    )
    assert code == 0 and pipeline_of == ["demo"]
    result = json.loads(out)
    assert sorted(result["seeds"]) == [3, 4] and result["likeness"] == [None, None]
    assert result["faces"] == 1 and result["face_index"] == 0 and len(result["box"]) == 3
    assert "note: Demo model" in err and "largest" not in err  # the patch on her suit is no face: no choice to explain
    assert all("<lora:ddpo_astro:1>" in Image.open(p).text["parameters"] for p in result["paths"])
    names = [Path(p).name for p in result["paths"]]  # the time, the rank, the seed
    assert all(
        re.fullmatch(rf"\d{{6}}-portrait{n}-{seed}\.png", name) for n, name, seed in zip((1, 2), names, result["seeds"])
    ), names
    code, out, _ = run(
        capsys,
        "--data-dir",
        rl_copy,
        "portrait",
        "--user",
        "astro",
        "--template",
        scene,
        "--num",
        "1",
        "--seed",
        "8",
        "--num-inference-steps",
        "4",
        "--no-rl",
        "--no-fusion",
    )
    path, _, rest = out.rstrip("\n").partition("  ")
    assert code == 0 and rest == "(seed 8, likeness none)"
    assert "ddpo_astro" not in Image.open(path).text["parameters"]


def test_likeness_scores_each_image_and_says_why_one_has_no_score(home_copy, capsys, tmp_path):
    import photos

    face = photos.save(photos.astronaut(), tmp_path / "astro.png")
    junk = tmp_path / "notes.jpg"
    junk.write_text("not a photo")
    code, out, _ = run(capsys, "--data-dir", home_copy, "likeness", "--user", "astro", face, junk, "--json")
    result = json.loads(out)
    assert code == 0 and result["user"] == "astro" and result["backend"]
    scale = result["scale"]  # the cosines at 0, 0.5 and 1: 1 is the user's own photos' spread, against all of them
    assert scale["stranger"] < scale["threshold"] < scale["full"] < 1 and scale["faces"] == 4
    scored, unread = result["images"]
    assert scored["image"] == str(face) and scored["likeness"] > 0.5 and scored["faces"] == 1
    assert unread["image"] == str(junk) and unread["likeness"] is None and unread["faces"] == 0 and unread["reason"]
    code, out, _ = run(capsys, "--data-dir", home_copy, "likeness", "--user", "astro", face, junk)
    first, second = out.splitlines()
    assert code == 0 and first.startswith(f"{scored['likeness']:.3f}  {face}  (")
    assert second == f"  -    {junk}  ({unread['reason']})"


def test_prepare_prints_the_table_or_the_record(home, capsys, tmp_path):
    import photos

    face = photos.save(photos.astronaut(), tmp_path / "astro.png")
    code, out, _ = run(capsys, "--data-dir", home, "prepare", "--user", "anna", face)
    assert code == 0 and out.startswith("backend: ") and "astro.png" in out and "1 accepted, 0 rejected." in out
    code, out, _ = run(capsys, "--data-dir", home, "prepare", "--user", "anna", "--json")  # no paths: checked again
    record = json.loads(out)
    assert code == 0 and [p["accepted"] for p in record["photos"]] == [True]
    code, _, err = run(capsys, "--data-dir", home, "prepare", "--user", "anna", "--remove", "astro.png")
    assert code == 2 and "No photos for 'anna' yet" in err  # the last one removed
    assert list(Workspace(home).photos_dir("anna").iterdir()) == []
    code, _, err = run(capsys, "--data-dir", home, "prepare", "--user", "an na", face)
    assert code == 2 and "not allowed" in err
