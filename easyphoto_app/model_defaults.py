"""The settings a model brings with it: SD 1.5's are the settings' own defaults; a family's differ where it needs
(SDXL trains, samples RL and generates at its native size, 1024 px for SDXL base) and the demo model's marker has its
own training defaults. What the user set always wins."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.settings import GenerateConfig, RLConfig, Settings, TrainConfig

SECTIONS = {TrainConfig: "train", RLConfig: "rl", GenerateConfig: "generate"}
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


def model_defaults(cfg, model, given: set[str] = frozenset()):
    """`cfg` (a TrainConfig, RLConfig or GenerateConfig) with the model's own defaults: its family's and, for training,
    the demo's marker's train_defaults (SD 1.5's rank and learning rate turn the tiny face model's samples into noise).
    A value the user set is kept: one given as a flag (`given`, even if it equals SD 1.5's default) or changed in
    settings.toml."""
    from easyphoto_app.models import demo_marker

    section = SECTIONS[type(cfg)]
    own = dict(model.family.DEFAULTS.get(section, {}))
    size = native_size(model) if any(k in own for k in SIZES) else None
    own.update({k: size for k in SIZES if k in own and size})  # a family's size is a fallback for the model's own
    if section == "train" and model.is_demo and model.path:
        own.update(demo_marker(model.path).get("train_defaults", {}))
    unset = {f.name for f in fields(cfg) if getattr(cfg, f.name) == f.default and f.name not in given}
    return replace(cfg, **{k: v for k, v in own.items() if k in unset})


def panel_defaults(settings: Settings, section: str = "train"):
    """What a panel shows: the settings' section, with the model's own defaults (the shipped demo's, SDXL's size):
    a panel hands its values to the job, so it must show the ones the model works with. A model that cannot be
    resolved without a download shows the settings as they are."""
    from easyphoto_app.models import DEMO, FACE_MODEL, ResolvedModel, cached_hub_model, resolve_model

    cfg, spec = getattr(settings, section), settings.app.model
    if spec == DEMO:
        return model_defaults(cfg, ResolvedModel(DEMO, DEMO, FACE_MODEL))
    if not (Path(spec).expanduser().exists() or cached_hub_model(spec)):
        return cfg  # not at hand (it would resolve to the demo until downloaded)
    try:
        return model_defaults(cfg, resolve_model(spec, settings.data_dir, download=False))
    except UserError:
        return cfg
