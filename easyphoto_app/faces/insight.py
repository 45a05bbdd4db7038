"""insightface backend: SCRFD detection with 5 landmarks + ArcFace 512-d identity.

The models (buffalo_l) are downloaded once by insightface's own downloader into
the data dir; offline, the user is told exactly where to put the files.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from easyphoto_app.errors import UserError
from easyphoto_app.faces.base import DetectedFace, FaceBackend, normalize

log = logging.getLogger(__name__)
PACK = "buffalo_l"
INSIGHTFACE_LICENCE = (
    "insightface's pretrained models are for non-commercial research use only "
    "(see https://github.com/deepinsight/insightface#license)."
)


def insightface_root(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / "insightface"


def insightface_model_dir(data_dir: Path) -> Path:
    return insightface_root(data_dir) / "models" / PACK


def _providers() -> list[str]:
    import onnxruntime

    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


class InsightFaceBackend(FaceBackend):
    name = "insightface"
    label = "insightface buffalo_l (SCRFD + ArcFace)"
    has_landmarks = True
    identifies_people = True
    same_person_threshold = 0.30  # ArcFace (w600k_r50): the usual verification threshold for its cosine
    stranger_similarity = 0.05  # unrelated people score about 0 on ArcFace
    duplicate_threshold = 0.98

    def __init__(self, folder: Path, det_size: int = 640):
        from insightface.model_zoo import get_model

        self.folder = Path(folder)
        self.detector = self.recognizer = None
        providers = _providers()
        ctx_id = 0 if "CUDAExecutionProvider" in providers else -1
        for onnx_file in sorted(self.folder.glob("*.onnx")):
            model = get_model(str(onnx_file), providers=providers)
            task = getattr(model, "taskname", None)
            if task == "detection" and self.detector is None:
                model.prepare(ctx_id, input_size=(det_size, det_size), det_thresh=0.5)
                self.detector = model
            elif task == "recognition" and self.recognizer is None:
                model.prepare(ctx_id)
                self.recognizer = model
        if self.detector is None or self.recognizer is None:
            raise UserError(
                f"{self.folder} lacks a face detector or recogniser .onnx model ({PACK}: det_10g.onnx, w600k_r50.onnx)."
            )
        self._lock = threading.Lock()

    @staticmethod
    def models_present(folder: Path) -> bool:
        return Path(folder).is_dir() and len(list(Path(folder).glob("*.onnx"))) >= 2

    @classmethod
    def create(cls, data_dir: Path, download: bool, required: bool) -> InsightFaceBackend | None:
        folder = insightface_model_dir(data_dir)
        if not cls.models_present(folder) and download:
            try:
                from insightface.utils.storage import ensure_available

                ensure_available("models", PACK, root=str(insightface_root(data_dir)))
            except Exception as exc:  # noqa: BLE001 - offline shows up as many error types
                log.warning("insightface model download failed: %s", exc)
        if cls.models_present(folder):
            return cls(folder)
        if required:
            raise UserError(
                f"The insightface models are not available (offline?). Put the {PACK} files (det_10g.onnx, "
                f"w600k_r50.onnx) in {folder}, or use the offline face backend."
            )
        return None

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        from insightface.app.common import Face

        bgr = np.ascontiguousarray(rgb[..., ::-1])
        with self._lock:
            bboxes, kpss = self.detector.detect(bgr, max_num=0, metric="default")
            faces = []
            for i in range(bboxes.shape[0]):
                face = Face(bbox=bboxes[i, :4], kps=None if kpss is None else kpss[i], det_score=bboxes[i, 4])
                embedding = self.recognizer.get(bgr, face)
                faces.append(
                    DetectedFace(
                        bbox=np.asarray(face.bbox, np.float32),
                        score=float(face.det_score),
                        kps=None if face.kps is None else np.asarray(face.kps, np.float32),
                        embedding=normalize(embedding),
                    )
                )
        return faces
