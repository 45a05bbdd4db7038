"""dlib backend: HOG face detection, 5-point landmarks and dlib's 128-d ResNet face descriptor.

Everything installs from the package registry as wheels (`dlib-bin`, Boost licence; `face-recognition-models`,
whose models are public domain: the 5-point landmarks, the descriptor and the CNN face detector), so it works
offline with nothing to download. The package also ships a 68-point landmark model whose training data forbids
commercial use: it is never loaded here.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from easyphoto_app.errors import UserError
from easyphoto_app.faces.base import DetectedFace, FaceBackend, normalize
from easyphoto_app.faces.images import resize

DETECT_SIDE = 1000  # HOG runs on a copy this long: its cost grows with the pixel count
# HOG's margin, dlib's default. No cut on it separates false detections (the astronaut's suit patch: 0.06-0.17)
# from hard real faces (one in t1.jpg: 0.19), so a weak box is checked again by dlib's CNN face detector, on a
# small crop around it: it found every real face of the test photos (confidence 1.00-1.09) and none of the
# false ones (benchmarks/face_check.py). Strong boxes are trusted: the check costs about 0.2 s a box.
MIN_DETECTION_SCORE = 0.0
CHECK_BELOW = 0.5
CHECK_SIDE = 160  # the crop (twice the box) is scaled to this: the face is then about the CNN's 80 px window
MODEL_FILES = {
    "landmarks": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
    "checker": "mmod_human_face_detector.dat",
}


def models_folder() -> Path | None:
    """face_recognition_models' data folder, found without importing it (its __init__ needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "models"
    return folder if all((folder / f).is_file() for f in MODEL_FILES.values()) else None


def unavailable_reason() -> str | None:
    """Why the dlib backend cannot run here, or None."""
    if importlib.util.find_spec("dlib") is None:
        return "the 'dlib-bin' package is not installed"
    if models_folder() is None:
        return "the 'face-recognition-models' package is not installed"
    return None


class DlibBackend(FaceBackend):
    name = "dlib"
    label = "dlib (HOG + ResNet descriptor, offline)"
    has_landmarks = True
    identifies_people = True
    # Cosine of L2-normalised descriptors, measured by benchmarks/face_identity.py on 8 real people x 20 looks
    # (the astronaut, Tom Hanks and the 6 people of t1.jpg): ROC AUC 1.000; same person min 0.967 (1st
    # percentile 0.973), different people median 0.857, 99th percentile 0.908, max 0.925. dlib's own rule
    # (distance 0.6 between raw descriptors, whose norm is about 1.45) is a cosine of about 0.914; real photos of
    # one person vary more than these looks of one photo, so the threshold stays near dlib's rule.
    same_person_threshold = 0.92
    stranger_similarity = 0.86
    duplicate_threshold = 0.995

    def __init__(self):
        reason = unavailable_reason()
        if reason:
            raise UserError(f"The dlib face backend cannot run: {reason}. Run ./run.sh --install-only (or run.bat).")
        import dlib

        folder = models_folder()
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks = dlib.shape_predictor(str(folder / MODEL_FILES["landmarks"]))
        self.descriptor = dlib.face_recognition_model_v1(str(folder / MODEL_FILES["descriptor"]))
        self.checker = dlib.cnn_face_detection_model_v1(str(folder / MODEL_FILES["checker"]))
        self._lock = threading.Lock()  # dlib's models are not safe to call from two threads at once

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        import dlib

        # dlib reads the buffer as it is: a view or a non-uint8 array gives silently wrong boxes
        full = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
        scale = min(1.0, DETECT_SIDE / max(full.shape[:2]))
        small = full if scale == 1.0 else resize(full, scale)  # cv2 returns a contiguous uint8 copy
        faces = []
        with self._lock:
            rects, scores, _ = self.detector.run(small, 0, MIN_DETECTION_SCORE)
            if not rects:  # small faces: look again at twice the size
                rects, scores, _ = self.detector.run(small, 1, MIN_DETECTION_SCORE)
            for rect, score in zip(rects, scores):
                box = np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float32) / scale
                shape = self.landmarks(full, dlib.rectangle(*[int(round(v)) for v in box]))
                points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)
                embedding = np.asarray(self.descriptor.compute_face_descriptor(full, shape), dtype=np.float32)
                ignored = (
                    None
                    if score >= CHECK_BELOW or self._cnn_agrees(full, box)
                    else (f"not a face: a weak detection (score {score:.2f}) where dlib's CNN face detector finds none")
                )
                faces.append(
                    DetectedFace(
                        bbox=box,
                        score=float(score),
                        kps=_five_points(points),
                        embedding=normalize(embedding),
                        ignored=ignored,
                    )
                )
        return faces

    def _cnn_agrees(self, full: np.ndarray, box: np.ndarray) -> bool:
        """Whether the CNN detector finds a face centred inside `box`, on a crop twice its size around it."""
        x1, y1, x2, y2 = (float(v) for v in box)
        half = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        left, top = int(max(0, cx - half)), int(max(0, cy - half))
        crop = full[top : int(min(full.shape[0], cy + half)), left : int(min(full.shape[1], cx + half))]
        if min(crop.shape[:2]) < 2:
            return False
        k = CHECK_SIDE / max(crop.shape[:2])
        for found in self.checker(resize(crop, k), 0):
            r = found.rect
            fx, fy = left + (r.left() + r.right()) / 2 / k, top + (r.top() + r.bottom()) / 2 / k
            if x1 <= fx <= x2 and y1 <= fy <= y2:
                return True
        return False


def _five_points(points: np.ndarray) -> np.ndarray:
    """dlib's [right eye outer, right eye inner, left eye outer, left eye inner, nose] (image left/right) as the
    insightface order the alignment uses: left eye, right eye, nose; the mouth corners it lacks are estimated
    below the nose so that a caller indexing 5 points gets a plausible face."""
    left_eye, right_eye, nose = points[2:4].mean(0), points[0:2].mean(0), points[4]
    down = nose - (left_eye + right_eye) / 2
    return np.array([left_eye, right_eye, nose, left_eye + 1.6 * down, right_eye + 1.6 * down], dtype=np.float32)
