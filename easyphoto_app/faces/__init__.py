"""Faces: detect, align, score and select the faces of one person.

Two backends share one interface (`FaceBackend.analyze`): insightface (SCRFD +
ArcFace, downloaded once) and an offline fallback that needs no download.
"""

from __future__ import annotations

from pathlib import Path

from easyphoto_app.faces.base import DetectedFace, FaceBackend
from easyphoto_app.faces.insight import INSIGHTFACE_LICENCE, InsightFaceBackend, insightface_model_dir
from easyphoto_app.faces.offline import OfflineBackend

__all__ = ["DetectedFace", "FaceBackend", "get_backend", "backend_status"]

_cache: dict[tuple, FaceBackend] = {}


def get_backend(choice: str, data_dir: Path, download: bool = False) -> FaceBackend:
    """auto: insightface when its models are here (or download=True and it downloads), else offline."""
    key = (choice, str(data_dir))
    if key in _cache:
        return _cache[key]
    if choice not in ("auto", "insightface", "offline"):
        from easyphoto_app.errors import UserError

        raise UserError(f"Unknown face backend {choice!r}: use auto, insightface or offline.")
    backend: FaceBackend
    if choice == "offline":
        backend = OfflineBackend()
    else:
        backend = InsightFaceBackend.create(data_dir, download=download or choice == "insightface",
                                            required=choice == "insightface") or OfflineBackend()
    _cache[key] = backend
    return backend


def backend_status(settings) -> dict:
    folder = insightface_model_dir(settings.data_dir)
    present = InsightFaceBackend.models_present(folder)
    if present:
        return {"ok": True, "value": f"insightface buffalo_l in {folder}", "fix": None}
    return {
        "ok": True,
        "value": "offline fallback (weaker likeness scores)",
        "fix": f"For better face checks, the insightface buffalo_l models download on first use when online, "
               f"or put det_10g.onnx and w600k_r50.onnx in {folder}. {INSIGHTFACE_LICENCE}",
    }
