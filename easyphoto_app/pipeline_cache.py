"""One loaded model per process, kept between generations; a different model, device or precision replaces it."""

from __future__ import annotations

import threading

from easyphoto_app.device import pick_device
from easyphoto_app.loaded_model import LoadedModel
from easyphoto_app.model_loading import ResolvedModel, load_pipeline, resolve_model
from easyphoto_app.precision import pick_precision


class PipelineCache:
    """Keeps one LoadedModel per process; a different model replaces it, with everything kept with it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._loaded: LoadedModel | None = None

    @property
    def model(self) -> ResolvedModel | None:
        """The model loaded last (None before the first load)."""
        return self._loaded.model if self._loaded else None

    def get(self, settings) -> LoadedModel:
        """The loaded model of settings.app's model, device and precision."""
        app = settings.app
        device = pick_device(app.device)
        precision = pick_precision(app.precision, device)
        with self._lock:
            model = resolve_model(app.model, settings.data_dir, device)
            key = (model.kind, str(model.path), device, precision.name)
            if key != self._key:
                self._loaded = None  # free the old one before loading the new one
                self._loaded = LoadedModel(load_pipeline(model, device, precision.dtype), model)
                self._key = key
            self._loaded.model = model  # the demo chosen on purpose has no fallback note, even with the same pipeline
            return self._loaded

    def clear(self):
        with self._lock:
            self._loaded, self._key = None, None
