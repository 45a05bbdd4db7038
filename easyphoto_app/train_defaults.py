"""A face LoRA's training settings for a model: SD 1.5's defaults (TrainConfig), the family's own (SDXL's) and the
demo model's, under whatever the user set."""

from __future__ import annotations

from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.settings import Settings, TrainConfig


def default_steps(photos: int) -> int:
    return min(200 * photos, 800)


def model_defaults(cfg: TrainConfig, model, given: set[str] = frozenset()) -> TrainConfig:
    """The model's own training defaults: its family's (SDXL trains at 1024 px) and the demo's marker's
    train_defaults (SD 1.5's rank and learning rate turn the tiny face model's samples into noise). A value the user
    set is kept: one given as a flag (`given`, even if it equals SD 1.5's default) or changed in settings.toml."""
    from dataclasses import fields, replace

    from easyphoto_app.models import demo_marker

    own = dict(model.family.TRAIN_DEFAULTS)
    own.update(demo_marker(model.path).get("train_defaults", {}) if model.is_demo and model.path else {})
    unset = {f.name for f in fields(TrainConfig) if getattr(cfg, f.name) == f.default and f.name not in given}
    return replace(cfg, **{k: v for k, v in own.items() if k in unset})


def panel_defaults(settings: Settings) -> TrainConfig:
    """What the training panel shows: the settings, with the model's own defaults (the shipped demo's, SDXL's 1024 px):
    the panel hands every value to the job as a flag, so it must show the ones the model trains with. A model that
    cannot be resolved without a download shows the settings as they are."""
    from easyphoto_app.models import DEMO, FACE_MODEL, ResolvedModel, cached_hub_model, resolve_model

    spec = settings.app.model
    if spec == DEMO:
        return model_defaults(settings.train, ResolvedModel(DEMO, DEMO, FACE_MODEL))
    if not (Path(spec).expanduser().exists() or cached_hub_model(spec)):
        return settings.train  # not at hand (it would resolve to the demo until downloaded)
    try:
        return model_defaults(settings.train, resolve_model(spec, settings.data_dir, download=False))
    except UserError:
        return settings.train
