"""Every default lives here, once.

The CLI flags, the UI's Advanced accordions and `settings.toml` all read these
dataclasses. `settings.toml` has one table per dataclass ([app], [faces], [train],
[rl], [generate], [portrait]); a key there overrides the default, and a CLI flag overrides both. The names are
diffusers' (`num_inference_steps`, `guidance_scale`, `max_train_steps`...); the older ones in `RENAMED` still work.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import tomllib

from easyphoto_app.errors import UserError
from easyphoto_app.precision import CHOICES as PRECISIONS
from easyphoto_app.workspace import atomic_write_text

ASSETS = Path(__file__).resolve().parent.parent / "assets"  # shipped files: styles, prompts, configs, the face model
DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
TRIGGER = "easyphoto_face, easyphoto, 1person"


def opt(default, help: str, **extra):
    """A dataclass field with help text (shown by --help and in the UI)."""
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class AppConfig:
    model: str = opt(
        DEFAULT_MODEL, "Base model: a Hugging Face id, a diffusers folder, a .safetensors file, or 'demo'."
    )
    device: str = opt(
        "auto", "auto (cuda, then mps, then cpu), cuda, mps or cpu.", choices=["auto", "cuda", "mps", "cpu"]
    )
    precision: str = opt(
        "auto",
        "Number format: auto (bf16 on GPUs that have it, else fp16; fp32 on the CPU), fp32, fp16 or bf16.",
        choices=list(PRECISIONS),
    )
    host: str = opt("127.0.0.1", "Address the web UI binds to.")
    port: int = opt(7860, "Port of the web UI.")
    open_browser: bool = opt(True, "Open the browser when the UI starts.")
    webui_lora_dir: str = opt("", "Optional: a WebUI models/Lora folder to copy finished LoRAs into.")


@dataclass
class FaceConfig:
    backend: str = opt(
        "auto",
        "Face backend: auto (insightface if its models are here, else dlib), insightface, dlib, "
        "or offline (finds faces only).",
        choices=["auto", "insightface", "dlib", "offline"],
    )
    keep: int = opt(15, "Keep at most this many accepted faces (the most alike).")
    min_face_px: int = opt(64, "Reject faces smaller than this (pixels, shorter side).")
    min_sharpness: float = opt(0.12, "Reject faces blurrier than this (0-1 sharpness score).")
    min_similarity: float = opt(0.0, "Reject faces less alike than this to the set (0 = backend default).")
    crop_size: int = opt(512, "Side of the aligned face crops, in pixels.")
    max_side: int = opt(2048, "Huge photos are downscaled to this longer side on load.")


@dataclass
class TrainConfig:
    max_train_steps: int = opt(0, "Training steps (0 = min(200 x photos, 800)).")
    rank: int = opt(128, "LoRA rank.")
    lora_alpha: float = opt(64.0, "LoRA alpha (scale = alpha / rank).")
    learning_rate: float = opt(1e-4, "Learning rate (the text encoder uses half).")
    resolution: int = opt(512, "Training resolution (the demo model uses its own small size).")
    gradient_accumulation_steps: int = opt(4, "Gradient accumulation steps.")
    train_batch_size: int = opt(1, "Images per step.")
    checkpointing_steps: int = opt(100, "Save and validate a checkpoint every N steps.")
    train_text_encoder: bool = opt(False, "Also train the text encoder (more memory).")
    num_validation_images: int = opt(2, "Images generated per checkpoint to score likeness.")
    seed: int = opt(42, "Random seed.")


@dataclass
class RLConfig:
    epochs: int = opt(100, "Maximum RL epochs (the time budget may stop it first).")
    max_hours: float = opt(1.0, "Time budget in hours; the run stops cleanly between steps.")
    learning_rate: float = opt(1e-4, "Learning rate of the RL LoRA.")
    rank: int = opt(4, "Rank of the RL LoRA.")
    samples_per_epoch: int = opt(8, "Images sampled per epoch.")
    sample_batch_size: int = opt(4, "Images sampled at once (lower it if GPU memory runs out).")
    train_batch_size: int = opt(1, "Images per PPO gradient step.")
    num_inference_steps: int = opt(50, "DDIM steps per sample (the demo model uses fewer).")
    eta: float = opt(1.0, "DDIM eta (noise); DDPO needs > 0.")
    guidance_scale: float = opt(5.0, "Classifier-free guidance scale.")
    timestep_fraction: float = opt(1.0, "Fraction of each trajectory's steps trained on.")
    timestep_batch: int = opt(3, "Timesteps trained in one UNet pass (same result; lower it if memory runs out).")
    clip_range: float = opt(1e-4, "PPO clip range.")
    adv_clip: float = opt(5.0, "Advantage clip.")
    inner_epochs: int = opt(1, "PPO passes over each epoch's samples.")
    resolution: int = opt(512, "Sample resolution (the demo model uses its own small size).")
    keep_checkpoints: int = opt(3, "Best checkpoints kept (the latest is always kept).")
    eval_every: int = opt(
        5,
        "Evaluate every N epochs (and before the first and after the last) on fixed prompts "
        "and noise; the final LoRA is the best evaluated one.",
    )
    eval_samples: int = opt(8, "Images per evaluation (about 7% of the run's time with the defaults).")
    ip_scale: float = opt(
        0.0,
        "Identity strength while RL samples: the IP-Adapter (plus-face) pulls the samples' faces towards the user's "
        "checked photos, so the reward sees closer faces from the first epoch (0 = off; the saved RL LoRA is the "
        "same kind of file either way).",
    )
    seed: int = opt(0, "Random seed.")


@dataclass
class GenerateConfig:
    prompt: str = opt("", "Prompt; empty = the trigger words and the chosen style.")
    negative_prompt: str = opt("lowres, bad anatomy, blurry, deformed, watermark, text", "Negative prompt.")
    style: str = opt("studio", "Style preset from assets/styles.json.")
    num: int = opt(1, "Number of images.")
    seed: int = opt(-1, "Seed (-1 = random; the seed used is saved with the image).")
    num_inference_steps: int = opt(25, "Sampling steps.")
    guidance_scale: float = opt(7.0, "Guidance (CFG) scale.")
    width: int = opt(512, "Width (the demo model uses its own size).")
    height: int = opt(512, "Height (the demo model uses its own size).")
    scheduler: str = opt("DPM++ 2M Karras", "Sampler.", choices=["DPM++ 2M Karras", "Euler a", "DDIM"])
    lora_weight: float = opt(1.0, "Weight of the face LoRA.")
    rl_weight: float = opt(1.0, "Weight of the RL (DDPO) LoRA.")
    ip_scale: float = opt(
        -1.0,
        "Identity strength: how strongly the IP-Adapter (plus-face) pulls the face towards the user's checked photos "
        "(0 = off; -1 = automatic: 0.6 before a face LoRA exists, so pictures come at once, off with one; raise to "
        "0.3-0.5 when a face drifts from the person). Downloads once: 2.6 GB for SD 1.5, 3.4 GB for SDXL.",
    )


@dataclass
class PortraitConfig:
    strength: float = opt(
        0.45,
        "How much of the template's face is repainted: 0.3 keeps its shape and light, 0.7 lets "
        "the LoRA redraw more (and drifts from the template).",
    )
    num: int = opt(2, "Candidates, one seed each, ranked by likeness.")
    seed: int = opt(-1, "Seed of the first candidate (-1 = random).")
    face_index: int = opt(-1, "Which face of the template, counted from the left from 0 (-1 = the largest).")
    crop_scale: float = opt(
        2.2, "Side of the square painted around the face, in face widths (head, hair and some context)."
    )
    controlnet: bool = opt(
        False,
        "Structure control: ControlNet canny keeps the template's outlines (downloads once when "
        "turned on: 723 MB on an NVIDIA GPU, 1.45 GB otherwise).",
    )
    controlnet_conditioning_scale: float = opt(0.6, "How strongly ControlNet holds the template's outlines (0-2).")
    fusion: bool = opt(
        True,
        "Face fusion: the user's own photo, warped onto the template's face, colour-matched and "
        "blended in before painting, so the LoRAs paint over the person's own features.",
    )
    # benchmarks/portrait_likeness.py (face model, strength 0.45, one seed, 5 templates of other people; the mean dlib
    # distance to the person, same person below 0.6), at weights 0.5 / 0.75 / 1: Coelho 0.703 / 0.595 / 0.516 (seam
    # 1.51 / 1.49 / 1.46, nearest to the template's person 0.69 / 0.70 / 0.75), Collins 0.679 / 0.592 / 0.556 (seam
    # 1.48 / 1.48 / 1.49, 0.66 / 0.70 / 0.69), both 10 train steps; Biden 0.637 / - / 0.498. More weight: more like
    # the person, the same seam, further from the template's person: 1.
    fusion_weight: float = opt(
        1.0,
        "Fuse the user's photo in once more after painting, at this weight, so the eyes, "
        "nose and mouth keep the person's shape (0 = off, 1 = the photo's features as "
        "they are).",
    )


SECTIONS = {
    "app": AppConfig,
    "faces": FaceConfig,
    "train": TrainConfig,
    "rl": RLConfig,
    "generate": GenerateConfig,
    "portrait": PortraitConfig,
}
SECTION_OF = {cls: section for section, cls in SECTIONS.items()}

# The names before diffusers' (issue 41), per section: old settings.toml keys, checkpoints and CLI flags still work.
# diffusers' training scripts: --max_train_steps, --learning_rate, --train_batch_size, --gradient_accumulation_steps,
# --checkpointing_steps, --num_validation_images; peft: lora_alpha; its pipelines: num_inference_steps, guidance_scale,
# controlnet_conditioning_scale; trl's DDPOConfig: sample_batch_size, train_batch_size.
RENAMED = {
    "train": {
        "steps": "max_train_steps",
        "alpha": "lora_alpha",
        "lr": "learning_rate",
        "grad_accum": "gradient_accumulation_steps",
        "batch_size": "train_batch_size",
        "save_every": "checkpointing_steps",
        "validation_images": "num_validation_images",
    },
    "rl": {
        "lr": "learning_rate",
        "sample_batch": "sample_batch_size",
        "train_batch": "train_batch_size",
        "steps": "num_inference_steps",
        "guidance": "guidance_scale",
    },
    "generate": {"steps": "num_inference_steps", "cfg": "guidance_scale"},
    "portrait": {"control_weight": "controlnet_conditioning_scale"},
}
_noticed: set[str] = set()


def notice_renamed(old: str, new: str) -> None:
    """One line on stderr, once per process, when an old name is used."""
    line = f"note: {old} is now {new}; the old name still works"
    if line not in _noticed:
        _noticed.add(line)
        print(line, file=sys.stderr)


def current_names(section: str, values: dict, source: Path | None = None) -> dict:
    """`values` (a settings.toml table, a checkpoint's settings) with a section's old names replaced by today's; where
    both are given, the new name's value wins. With `source`, each old name used gets its notice."""
    renamed = RENAMED.get(section, {})
    out = {key: value for key, value in values.items() if key not in renamed}
    for old, value in values.items():
        if old in renamed:
            out.setdefault(renamed[old], value)
            if source is not None:
                notice_renamed(f"'{old}' in [{section}] of {source}", f"'{renamed[old]}'")
    return out


@dataclass
class Settings:
    data_dir: Path
    app: AppConfig = field(default_factory=AppConfig)
    faces: FaceConfig = field(default_factory=FaceConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    portrait: PortraitConfig = field(default_factory=PortraitConfig)
    given: set[str] = field(default_factory=set)  # "section.key" of each value a CLI flag set

    def given_in(self, section: str) -> set[str]:
        """The keys of a section that a CLI flag set: they win over a model's own defaults."""
        return {k.split(".", 1)[1] for k in self.given if k.startswith(section + ".")}

    @property
    def file(self) -> Path:
        return self.data_dir / "settings.toml"


def help_of(config, name: str) -> str:
    """The help text of a setting (the UI shows it under the control)."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config)}[name]


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("EasyPhoto", appauthor=False))


def resolve_data_dir(cli_value: str | None = None) -> Path:
    """--data-dir, then EASYPHOTO_HOME, then the platform's user data folder."""
    raw = cli_value or os.environ.get("EASYPHOTO_HOME") or default_data_dir()
    return Path(raw).expanduser().resolve()


def _coerce(cls, key: str, value, source: Path):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        raise UserError(f"{source}: unknown setting '{key}' (known: {', '.join(fields)}).")
    want = type(fields[key].default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want):
        raise UserError(f"{source}: setting '{key}' must be {want.__name__}, got {value!r}.")
    return value


def load_settings(data_dir: Path) -> Settings:
    """Read settings.toml (writing a commented default one on first run)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = Settings(data_dir=data_dir)
    if not settings.file.exists():
        save_settings(settings)
        return settings
    try:
        raw = tomllib.loads(settings.file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{settings.file} is not valid TOML ({exc}); fix or delete it.") from None
    for section, cls in SECTIONS.items():
        values = current_names(section, raw.get(section, {}), settings.file)
        current = getattr(settings, section)
        for key, value in values.items():
            setattr(current, key, _coerce(cls, key, value, settings.file))
    return settings


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render_settings(settings: Settings) -> str:
    lines = ["# EasyPhoto settings. Delete a line to get its default back.", ""]
    for section in SECTIONS:
        lines.append(f"[{section}]")
        obj = getattr(settings, section)
        for f in dataclasses.fields(obj):
            lines.append(f"# {f.metadata.get('help', '')}")
            lines.append(f"{f.name} = {_toml_value(getattr(obj, f.name))}")
        lines.append("")
    return "\n".join(lines)


def save_settings(settings: Settings) -> None:
    atomic_write_text(settings.file, render_settings(settings))


def flag_of(name: str) -> str:
    """The CLI flag of a setting: samples_per_epoch -> --samples-per-epoch."""
    return "--" + name.replace("_", "-")


def config_flags(cls, names: list[str], values, shown=None) -> list[str]:
    """Values from the UI as the CLI flags of a job, each converted to its setting's type. With `shown` (what the
    panel showed), only the values the user changed: an untouched one must not pass for the user's choice, or it
    would override the defaults of the model the job runs on."""
    kinds = {f.name: type(f.default) for f in dataclasses.fields(cls)}
    out: list[str] = []
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        value = kinds[name](value)
        if shown is not None and value == kinds[name](shown[i]):
            continue
        if kinds[name] is bool:
            out.append(flag_of(name) if value else flag_of("no_" + name))
        else:
            out += [flag_of(name), str(value)]
    return out


class _OldFlag(argparse.Action):
    """A flag's name before the rename: sets the same setting, after a notice."""

    def __init__(self, *args, new_flag: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.new_flag = new_flag

    def __call__(self, parser, namespace, values, option_string=None):
        notice_renamed(option_string, self.new_flag)
        setattr(namespace, self.dest, values)


def add_config_args(parser, cls, only: list[str] | None = None) -> None:
    """Add one --flag per dataclass field (default None: the settings file decides), and the old names of renamed
    fields as hidden aliases."""
    old_names = {new: old for old, new in RENAMED.get(SECTION_OF[cls], {}).items()}
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        flag = flag_of(f.name)
        kind = type(f.default)
        help_text = f.metadata["help"].replace("%", "%%")  # argparse %-formats help: a plain "7%" crashes --help
        kwargs = {"dest": f"{cls.__name__}.{f.name}", "default": None, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
        parser.add_argument(flag, **kwargs)
        if f.name in old_names:
            old = {**kwargs, "help": argparse.SUPPRESS, "action": _OldFlag, "new_flag": flag}
            parser.add_argument(flag_of(old_names[f.name]), **old)


def apply_config_args(settings: Settings, args) -> None:
    """Copy the flags the user gave onto the settings."""
    for section, cls in SECTIONS.items():
        obj = getattr(settings, section)
        for f in dataclasses.fields(cls):
            value = getattr(args, f"{cls.__name__}.{f.name}", None)
            if value is not None:
                setattr(obj, f.name, value)
                settings.given.add(f"{section}.{f.name}")
