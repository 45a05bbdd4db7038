"""One loaded pipeline per process, kept between generations; a different model, device or precision replaces it."""

from __future__ import annotations

import threading

from easyphoto_app.device import pick_device
from easyphoto_app.model_loading import ResolvedModel, load_pipeline, resolve_model
from easyphoto_app.precision import pick_precision


def pipeline_over(pipe, key, make):
    """A pipeline built by make() from pipe's loaded components (from_pipe: no second UNet), kept on pipe under
    `key` and made again only when the key changes; it shows progress as pipe does."""
    cached = pipe.__dict__.get("_ep_derived", {}).get(key[0])
    if cached is not None and cached[0] == key:
        return cached[1]
    derived = make()
    derived.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    pipe.__dict__.setdefault("_ep_derived", {})[key[0]] = (key, derived)
    return derived


class PipelineCache:
    """Keeps one loaded pipeline per process; a different model replaces it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._pipe = None
        self.model: ResolvedModel | None = None

    def get(self, settings):
        """The pipeline of settings.app's model, device and precision."""
        app = settings.app
        device = pick_device(app.device)
        precision = pick_precision(app.precision, device)
        with self._lock:
            model = resolve_model(app.model, settings.data_dir, device)
            key = (model.kind, str(model.path), device, precision.name)
            if key != self._key:
                self._pipe = None  # free the old one before loading the new one
                self._pipe = load_pipeline(model, device, precision.dtype)
                self._key = key
            self.model = model  # the demo chosen on purpose has no fallback note, even with the same pipeline
            return self._pipe, self.model

    def clear(self):
        with self._lock:
            self._pipe, self._key, self.model = None, None, None
