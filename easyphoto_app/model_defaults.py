"""The settings a model brings with it: SD 1.5's are the settings' own defaults; a family's differ where it needs
(SDXL trains, samples RL and generates at its native size, 1024 px for SDXL base) and the demo model's marker has its
own training defaults. What the user set always wins."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

from easyphoto_app.demo_model import DEMO_RESOLUTION, DEMO_RL_STEPS, demo_marker
from easyphoto_app.errors import UserError
from easyphoto_app.model_loading import resolve_model
from easyphoto_app.settings import SECTION_OF, Settings, current_names

SIZES = ("resolution", "width", "height")


def vae_scale(vae_config: dict) -> int:
    """How many pixels a latent spans, as diffusers counts it: halved at each autoencoder block after the first."""
    return 2 ** (len(vae_config.get("block_out_channels", (64,))) - 1)


def native_size(model) -> int | None:
    """The size a model was made for, as diffusers' pipelines default to it: the UNet's sample size times the
    autoencoder's scale (SDXL base: 128 x 8). None when its configs are not at hand."""
    folder = model.family.CONFIG if model.kind == "file" else model.path  # a single file: its family's configs
    try:
        unet = json.loads((Path(folder) / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((Path(folder) / "vae" / "config.json").read_text(encoding="utf-8"))
        return int(unet["sample_size"]) * vae_scale(vae)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def default_steps(photos: int) -> int:
    return min(200 * photos, 800)


def demo_defaults(folder) -> dict[str, dict]:
    """The demo model's own settings, per section: its marker's training defaults (SD 1.5's rank and learning rate
    turn the tiny face model's samples into noise), and the size and RL steps it always runs at."""
    marker = demo_marker(folder)
    size = int(marker.get("resolution", DEMO_RESOLUTION))
    return {
        "train": current_names("train", marker.get("train_defaults", {})),  # a copy from before the rename
        "rl": {"num_inference_steps": DEMO_RL_STEPS, "resolution": size},
        "generate": {"width": size, "height": size},
    }


def model_defaults(cfg, model, given: set[str] = frozenset()):
    """`cfg` (a TrainConfig, RLConfig or GenerateConfig) with the model's own defaults: its family's and the demo's.
    A value the user set is kept: one given as a flag (`given`, even if it equals SD 1.5's default) or changed in
    settings.toml."""
    section = SECTION_OF[type(cfg)]
    own = dict(model.family.DEFAULTS.get(section, {}))
    size = native_size(model) if any(k in own for k in SIZES) else None
    own.update({k: size for k in SIZES if k in own and size})  # a family's size is a fallback for the model's own
    if model.is_demo and model.path:
        own.update(demo_defaults(model.path)[section])
    unset = {f.name for f in fields(cfg) if getattr(cfg, f.name) == f.default and f.name not in given}
    return replace(cfg, **{k: v for k, v in own.items() if k in unset})


def panel_model(settings: Settings):
    """The model a job started now would run on, found without a download: a model that is not at hand is the demo,
    as a job falls back to it offline (online, the job downloads the model and takes its defaults itself)."""
    try:
        return resolve_model(settings.app.model, settings.data_dir, download=False)
    except UserError:
        return None


def panel_defaults(settings: Settings, section: str = "train"):
    """What a panel shows: the settings' section with the defaults of the model a job would run on now (the demo's
    when the configured model is not downloaded, SDXL's size). A panel hands over only what the user changed, so the
    job still takes its own model's defaults for the rest."""
    cfg, model = getattr(settings, section), panel_model(settings)
    return model_defaults(cfg, model) if model else cfg
