"""Generation on one cached pipeline: stacked LoRAs, `<lora:name:w>` prompt tags, A1111 PNG info."""

from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from easyphoto_app import __version__, identity_adapter
from easyphoto_app.checkpoints import lora_hash
from easyphoto_app.checkpoints import model_hash as file_model_hash
from easyphoto_app.demo_model import native_resolution
from easyphoto_app.errors import UserError, oom_message
from easyphoto_app.loaded_model import LoadedModel
from easyphoto_app.settings import ASSETS, TRIGGER, GenerateConfig
from easyphoto_app.workspace import Workspace, atomic_path, unique_path

LORA_TAG = re.compile(r"<lora:\s*([^:<>]+?)\s*(?::\s*([-+]?[0-9]*\.?[0-9]+)\s*)?>", re.IGNORECASE)
SCHEDULERS = ("DPM++ 2M Karras", "Euler a", "DDIM")
# How A1111 1.9+ writes each in PNG info: the sampler, and the schedule type apart (absent = automatic)
A1111_SAMPLER = {"DPM++ 2M Karras": ("DPM++ 2M", "Karras"), "Euler a": ("Euler a", None), "DDIM": ("DDIM", None)}


def load_styles() -> dict[str, str]:
    path = ASSETS / "styles.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"studio": "studio portrait"}


def default_prompt(style: str) -> str:
    styles = load_styles()
    if style not in styles:
        raise UserError(f"Unknown style {style!r}; choose one of: {', '.join(styles)}.")
    return f"{TRIGGER}, {styles[style]}"


def pick_seed(seed: int) -> int:
    """The seed asked for, or a random one for -1 (any negative): the first of a run's seeds (seed, seed+1, ...)."""
    return seed if seed >= 0 else random.randrange(2**31)


def parse_lora_tags(prompt: str) -> tuple[str, list[tuple[str, float]]]:
    """Split WebUI-style `<lora:name:weight>` tags out of a prompt (weight defaults to 1). A tag that is not
    closed or whose weight is not a number is refused: passed on, it would be drawn as literal text."""
    tags = [(m.group(1), float(m.group(2)) if m.group(2) else 1.0) for m in LORA_TAG.finditer(prompt)]
    text = LORA_TAG.sub(" ", prompt)
    broken = re.search(r"<\s*lora\s*:[^>]*>?", text, re.IGNORECASE)
    if broken:
        raise UserError(
            f"Malformed LoRA tag {broken.group(0).strip()!r}: write <lora:NAME> or <lora:NAME:WEIGHT> "
            "with a number as the weight, e.g. <lora:anna:0.8>."
        )
    text = re.sub(r"\s+,", ",", re.sub(r"\s{2,}", " ", text)).strip(" ,")
    return text, tags


def prompt_note(tokenizer, prompt: str) -> str | None:
    """Say so when the prompt is longer than the text encoder reads (77 tokens with start and end)."""
    count = len(tokenizer(prompt, truncation=False).input_ids)
    limit = tokenizer.model_max_length
    if count <= limit:
        return None
    return f"The prompt is {count} tokens; the model reads the first {limit}, so the end of it is ignored: shorten it."


def available_loras(ws: Workspace) -> dict[str, Path]:
    if not ws.loras_dir.is_dir():
        return {}
    return {p.stem: p for p in sorted(ws.loras_dir.glob("*.safetensors"))}


def model_hash(model) -> str:
    """A1111's Model hash of a single file; for a folder model, of its UNet weights (the nearest thing)."""
    weights = model.path if model.kind == "file" else next(iter(sorted(model.path.glob("unet/*.safetensors"))), None)
    return file_model_hash(weights) if weights else "unknown"


def model_name(model) -> str:
    """The Model field: the checkpoint's name as A1111 shows it (its file stem), or what was asked for."""
    if model.is_demo:
        return "EasyPhoto demo model"
    return Path(model.source).stem if model.kind == "file" else Path(model.source).name or model.source


def set_scheduler(pipe, name: str) -> None:
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler

    config = pipe.scheduler.config
    if name == "DPM++ 2M Karras":
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(
            config, use_karras_sigmas=True, algorithm_type="dpmsolver++"
        )
    elif name == "Euler a":
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(config)
    elif name == "DDIM":
        pipe.scheduler = DDIMScheduler.from_config(config)
    else:
        raise UserError(f"Unknown sampler {name!r}; choose one of: {', '.join(SCHEDULERS)}.")


@dataclass
class LoraChoice:
    name: str
    path: Path
    weight: float


def choose_loras(
    ws: Workspace, user: str | None, tags: list[tuple[str, float]], cfg: GenerateConfig, use_rl: bool
) -> list[LoraChoice]:
    """Prompt tags win; otherwise the user's face LoRA (+ the RL LoRA when present and wanted)."""
    found = available_loras(ws)
    if tags:
        unknown = [name for name, _ in tags if name not in found]
        if unknown:
            raise UserError(
                f"Unknown LoRA {', '.join(unknown)} in the prompt; "
                f"available: {', '.join(found) or 'none yet (train one first)'}."
            )
        return [LoraChoice(name, found[name], w) for name, w in tags]
    if not user:
        return []
    instant = identity_adapter.resolve_scale(cfg.ip_scale, has_lora=False) > 0
    if not ws.face_lora(user).exists() and instant and has_checked_faces(ws, user):
        return []  # instant mode: the identity adapter alone draws the face from the photos
    other_way = "once photos are checked, identity strength above 0 draws without one"
    chosen = [LoraChoice(user, ws.require_face_lora(user, other_way), cfg.lora_weight)]
    rl = ws.ddpo_lora(user)
    if use_rl and rl.exists():
        chosen.append(LoraChoice(rl.stem, rl, cfg.rl_weight))
    return chosen


def has_checked_faces(ws: Workspace, user: str) -> bool:
    from easyphoto_app.faces.prepare import load_record  # noqa: PLC0415 - start-up (numpy)

    return any(p.get("accepted") for p in (load_record(ws, user) or {}).get("photos", []))


def plan_loras(ws: Workspace, cfg: GenerateConfig, user: str | None, use_rl: bool) -> tuple[str, list[LoraChoice]]:
    """The prompt without its LoRA tags, and the LoRAs to draw with. Cheap: callers run it before loading a
    model too, so a mistake in the request is said at once, not after minutes of loading."""
    text, tags = parse_lora_tags(cfg.prompt or default_prompt(cfg.style))
    return text, choose_loras(ws, user, tags, cfg, use_rl)


def png_parameters(
    prompt: str,
    loras: list[LoraChoice],
    cfg: GenerateConfig,
    seed: int,
    w: int,
    h: int,
    model,
    extra: tuple[str, ...] = (),
) -> str:
    """A1111's `parameters` text; `extra` fields (e.g. a portrait's denoising strength) go before the version."""
    tags = " ".join(f"<lora:{lora.name}:{lora.weight:g}>" for lora in loras)
    full_prompt = f"{prompt} {tags}".strip()

    sampler, schedule = A1111_SAMPLER[cfg.scheduler]
    parts = (
        [f"Steps: {cfg.num_inference_steps}", f"Sampler: {sampler}"]
        + ([f"Schedule type: {schedule}"] if schedule else [])
        + [
            f"CFG scale: {cfg.guidance_scale:g}",
            f"Seed: {seed}",
            f"Size: {w}x{h}",
            f"Model hash: {model_hash(model)}",
            f"Model: {model_name(model)}",
            "RNG: CPU",  # the noise comes from a CPU generator whatever the device
        ]
    )
    if loras:
        parts.append('Lora hashes: "' + ", ".join(f"{lora.name}: {lora_hash(lora.path)}" for lora in loras) + '"')
    parts += [*extra, f"Version: EasyPhoto {__version__}"]
    return f"{full_prompt}\nNegative prompt: {cfg.negative_prompt}\n" + ", ".join(parts)


LIKENESS_FIELD = "Face likeness"  # ours, in A1111's settings line: "none" = scored, no face found
LIKENESS_WRITTEN = re.compile(rf"(?:^|, ){LIKENESS_FIELD}: (none|\d+(?:\.\d+)?)(?=,|$)")


def likeness_value(score) -> float | None:
    """The one number an image keeps (faces.likeness.Score -> its likeness as every caption shows it)."""
    return None if score is None or score.likeness is None else round(score.likeness, 2)


def format_likeness(value: float | None) -> str:
    return "none" if value is None else f"{value:.2f}"


def likeness_fields(score) -> tuple[str, ...]:
    """The PNG info field for a Score; none for an image that was not scored (no recognizer)."""
    return () if score is None else (f"{LIKENESS_FIELD}: {format_likeness(likeness_value(score))}",)


def read_likeness(parameters: str) -> tuple[bool, float | None]:
    """(written, value) of an image's likeness field; a value of None means scored but no face was found."""
    found = LIKENESS_WRITTEN.findall(parameters.rsplit("\n", 1)[-1])
    if not found:
        return False, None
    return True, None if found[-1] == "none" else float(found[-1])


def likeness_caption(value: float | None) -> str:
    return "likeness: no face found" if value is None else f"likeness {format_likeness(value)}"


def caption(parameters: str, *head: str) -> str:
    """An image's caption: head (e.g. its seed), then the likeness written into it (nothing when none was)."""
    written, value = read_likeness(parameters)
    return " · ".join([*head, likeness_caption(value)] if written else head)


def save_with_parameters(
    image,
    folder: Path,
    stem: str,
    prompt: str,
    loras: list[LoraChoice],
    cfg: GenerateConfig,
    seed: int,
    model,
    extra: tuple[str, ...] = (),
) -> tuple[Path, str]:
    """Save image with its parameters (Size: the file's own width x height); returns its path and that text."""
    parameters = png_parameters(prompt, loras, cfg, seed, *image.size, model, extra)
    return save_png(image, folder, stem, parameters), parameters


def save_png(image, folder: Path, stem: str, parameters: str) -> Path:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    target = unique_path(folder, f"{stem}.png")  # same second and seed (e.g. Compare): never overwrite an image
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return target


def run_pipeline(pipe, done: int, total: int, progress, should_stop, what_to_lower: str, **call):
    """One image from pipe(**call): progress counts on from `done` of `total` steps, should_stop interrupts
    between steps, and running out of memory becomes a refusal that says what to lower."""
    import torch

    def on_step(p, step, t, kwargs):
        if progress:
            progress(done + step + 1, total)
        if should_stop and should_stop():
            p._interrupt = True
        return kwargs

    try:
        return pipe(**call, callback_on_step_end=on_step).images[0]
    except torch.OutOfMemoryError:
        raise UserError(oom_message(what_to_lower)) from None


@dataclass
class Generated:
    paths: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None  # e.g. a prompt longer than the model reads
    likeness: list[float | None] = field(default_factory=list)  # as written; all None when not scored
    mode: str = ""  # instant mode (the identity adapter alone), LoRA, LoRA + identity adapter, base model

    def captions(self, *head: str) -> list[str]:
        return [caption(params, *head, f"seed {seed}") for params, seed in zip(self.parameters, self.seeds)]


def generate(
    loaded: LoadedModel,
    ws: Workspace,
    cfg: GenerateConfig,
    user: str | None = None,
    use_rl: bool = True,
    progress=None,
    should_stop=None,
    out_folder: Path | None = None,
) -> Generated:
    """Generate cfg.num images, one seed each (seed, seed+1, ...), saved with their parameters and, for a user
    with a face recognizer, their likeness to that user."""
    import torch

    from easyphoto_app.faces.likeness import scorer_or_none  # noqa: PLC0415 - start-up (numpy)

    pipe, model = loaded.pipe, loaded.model
    text, loras = plan_loras(ws, cfg, user, use_rl)
    width = native_resolution(model, cfg.width)
    height = native_resolution(model, cfg.height)
    if width % 8 or height % 8:
        raise UserError(f"Width and height must be multiples of 8 (got {width}x{height}).")
    base_seed = pick_seed(cfg.seed)
    set_scheduler(pipe, cfg.scheduler)
    loaded.use_loras(loras)
    people = {user: loras} if user else {}
    identity = identity_adapter.prepare(loaded, ws, people, cfg.ip_scale, cfg.guidance_scale > 1).get(user)
    folder = out_folder or ws.outputs_dir(user or "_base") / date.today().isoformat()
    scorer = scorer_or_none(ws, user) if user else None
    result = Generated(note=prompt_note(pipe.tokenizer, text), mode=identity_adapter.mode(identity, loras))
    start, fields = time.perf_counter(), (identity.png_field(),) if identity else ()
    total = cfg.num * cfg.num_inference_steps
    for i in range(cfg.num):
        seed = base_seed + i
        image = run_pipeline(
            pipe,
            i * cfg.num_inference_steps,
            total,
            progress,
            should_stop,
            "the image size, the number of images or the steps",
            prompt=text,
            negative_prompt=cfg.negative_prompt or None,
            num_inference_steps=cfg.num_inference_steps,
            guidance_scale=cfg.guidance_scale,
            width=width,
            height=height,
            generator=torch.Generator("cpu").manual_seed(seed),
            **(identity.call_kwargs(pipe) if identity else {}),
        )
        if should_stop and should_stop():
            break
        score = scorer.score(image) if scorer else None
        stem, extra = f"{time.strftime('%H%M%S')}-{seed}", fields + likeness_fields(score)
        path, params = save_with_parameters(image, folder, stem, text, loras, cfg, seed, model, extra)
        result.paths.append(path)
        result.seeds.append(seed)
        result.parameters.append(params)
        result.likeness.append(likeness_value(score))
    result.seconds = time.perf_counter() - start
    return result


def with_overrides(base: GenerateConfig, /, **changes) -> GenerateConfig:
    return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class Comparison:
    face_only: Generated
    stacked: Generated

    @property
    def face_scores(self) -> list[float | None]:
        return self.face_only.likeness

    @property
    def stacked_scores(self) -> list[float | None]:
        return self.stacked.likeness

    def items(self) -> list[tuple[str, str]]:
        """(path, caption) pairs, each seed's face-LoRA image next to its face + RL image."""
        left, right = self.face_only.captions("face LoRA"), self.stacked.captions("face + RL")
        pairs = zip(self.face_only.paths, left, self.stacked.paths, right)
        return [item for a, ca, b, cb in pairs for item in ((str(a), ca), (str(b), cb))]


def compare(
    loaded: LoadedModel, ws: Workspace, cfg: GenerateConfig, user: str, progress=None, should_stop=None
) -> Comparison:
    """The same seeds with the face LoRA alone and with face + RL LoRA, each scored for likeness as it is made."""
    if not ws.ddpo_lora(user).exists():
        raise UserError(f"User '{user}' has no RL LoRA yet: run RL first (RL tab or 'rl --user {user}').")
    text, _ = parse_lora_tags(cfg.prompt or default_prompt(cfg.style))
    cfg = dataclasses.replace(cfg, prompt=text, seed=pick_seed(cfg.seed))
    per_run = cfg.num * cfg.num_inference_steps
    total = 2 * per_run

    def half(offset):
        return (lambda s, t: progress(offset + s, total)) if progress else None

    face = generate(loaded, ws, cfg, user, use_rl=False, progress=half(0), should_stop=should_stop)
    stacked = generate(loaded, ws, cfg, user, use_rl=True, progress=half(per_run), should_stop=should_stop)
    return Comparison(face, stacked)
