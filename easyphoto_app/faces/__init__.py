"""Faces: detect, align, score and select the faces of one person.

Backends share one interface (`FaceBackend.analyze`): insightface (SCRFD + ArcFace; its buffalo_l models are a
deliberate download, non-commercial licence), dlib (HOG + ResNet descriptor; installed with the app, free to
use, offline) and an offline fallback that finds faces but cannot tell people apart. `auto` takes the first
of these that can run.
"""

from __future__ import annotations

from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.faces.base import DetectedFace, FaceBackend
from easyphoto_app.faces.dlib_backend import DlibBackend, unavailable_reason
from easyphoto_app.faces.insight import INSIGHTFACE_LICENCE, InsightFaceBackend, insightface_model_dir
from easyphoto_app.faces.offline import OfflineBackend

__all__ = ["DetectedFace", "FaceBackend", "get_backend", "backend_status", "recognizer_missing"]
CHOICES = ("auto", "insightface", "dlib", "offline")

_cache: dict[tuple, FaceBackend] = {}


def get_backend(choice: str, data_dir: Path, download: bool = False) -> FaceBackend:
    """auto: insightface when its models are here, else dlib, else the offline fallback. Naming insightface
    downloads its models if they are missing (download=True does so for auto too)."""
    key = (choice, str(data_dir))
    if key in _cache:
        return _cache[key]
    if choice not in CHOICES:
        raise UserError(f"Unknown face backend {choice!r}: use {', '.join(CHOICES)}.")
    backend: FaceBackend | None = None
    if choice == "offline":
        backend = OfflineBackend()
    elif choice == "dlib":
        backend = DlibBackend()  # a clear UserError when it cannot run
    else:
        backend = InsightFaceBackend.create(
            data_dir, download=download or choice == "insightface", required=choice == "insightface"
        )
        if backend is None:
            backend = DlibBackend() if unavailable_reason() is None else OfflineBackend()
    _cache[key] = backend
    return backend


def recognizer_missing() -> str:
    """Why neither recognizer runs here (for messages that explain a missing likeness)."""
    return unavailable_reason() or "no recognizer is available"


def backend_status(settings) -> dict:
    """doctor's line: which backend `auto` uses here, and what to do if identity checks are off."""
    folder = insightface_model_dir(settings.data_dir)
    if InsightFaceBackend.models_present(folder):
        return {"ok": True, "value": f"insightface buffalo_l in {folder}", "fix": f"Note: {INSIGHTFACE_LICENCE}"}
    why = unavailable_reason()
    if why is None:
        return {"ok": True, "value": DlibBackend.label, "fix": None}
    return {
        "ok": False,
        "value": OfflineBackend.label,
        "fix": f"No face recognizer: {why}. Run ./run.sh --install-only (or run.bat); until then photos of other "
        "people are not caught and RL, which needs a likeness score, cannot run.",
    }
