"""Offline fallback for when no face recognizer can run (dlib cannot be imported, no insightface models).

It finds and checks faces but does not tell people apart. Detection: scikit-image's LBP frontal-face
cascade (opencv-python 5 ships no cascades) on a downscaled copy; a face needs several overlapping raw
windows. Its LBP-histogram descriptor is kept only to spot near-identical copies of one photo (cosine above
0.995): as an identity it separated 8 people with ROC AUC 0.78 and let strangers through
(benchmarks/face_identity.py), so nothing is rejected as someone else and no likeness is scored with it.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from easyphoto_app.faces.base import DetectedFace, FaceBackend, normalize
from easyphoto_app.faces.images import resize

DETECT_SIDE = 480  # detection runs at this longer side
MIN_NEIGHBOURS = 4  # overlapping raw windows a detection needs (skimage groups them)
DESCRIPTOR_SIZE = 96
GRID = 6


class OfflineBackend(FaceBackend):
    name = "offline"
    label = "offline fallback (finds faces, cannot tell people apart)"
    duplicate_threshold = 0.995

    def __init__(self):
        self._local = threading.local()  # the cascade is not thread-safe

    @property
    def cascade(self):
        if not hasattr(self._local, "cascade"):
            from skimage.data import lbp_frontal_face_cascade_filename
            from skimage.feature import Cascade

            self._local.cascade = Cascade(lbp_frontal_face_cascade_filename())
        return self._local.cascade

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        gray = _gray(rgb)
        scale = min(1.0, DETECT_SIDE / max(gray.shape))
        small = resize(gray, scale) if scale < 1 else gray
        windows = self.cascade.detect_multi_scale(
            img=small,
            scale_factor=1.15,
            step_ratio=1,
            min_size=(20, 20),
            max_size=small.shape,
            min_neighbor_number=MIN_NEIGHBOURS,
        )
        faces = []
        for w in windows:
            box = np.array([w["c"], w["r"], w["c"] + w["width"], w["r"] + w["height"]], dtype=np.float32) / scale
            faces.append(DetectedFace(bbox=box, score=1.0, kps=None, embedding=self.embed(gray, box)))
        return faces

    def embed(self, gray: np.ndarray, bbox: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = [int(round(v)) for v in bbox]
        crop = gray[max(y1, 0) : max(y2, 1), max(x1, 0) : max(x2, 1)]
        return normalize(lbp_descriptor(crop) - generic_face())


def lbp_descriptor(crop: np.ndarray) -> np.ndarray:
    """Square-rooted uniform-LBP histograms on a GRID x GRID layout of the face."""
    from skimage.feature import local_binary_pattern

    crop = resize(crop, 1.0, shape=(DESCRIPTOR_SIZE, DESCRIPTOR_SIZE))
    codes = local_binary_pattern((crop * 255).astype(np.uint8), P=8, R=1, method="uniform")
    cell = DESCRIPTOR_SIZE // GRID
    hists = []
    for gy in range(GRID):
        for gx in range(GRID):
            block = codes[gy * cell : (gy + 1) * cell, gx * cell : (gx + 1) * cell]
            h, _ = np.histogram(block, bins=10, range=(0, 10))
            hists.append(h / max(h.sum(), 1))
    return np.sqrt(np.concatenate(hists)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def generic_face() -> np.ndarray:
    """The mean descriptor of the 100 faces in skimage's LFW subset. Subtracting it
    leaves what is particular to a face, so different people score near 0."""
    from skimage.data import lfw_subset

    faces = lfw_subset()[:100].astype(np.float32)
    return np.mean([lbp_descriptor(f) for f in faces], axis=0)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) / 255.0
