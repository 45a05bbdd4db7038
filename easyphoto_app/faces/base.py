"""The face backend interface and shared geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The border `detect_padded` adds on each side, as a fraction of the photo's longer side. benchmarks/face_border.py:
# dlib found 11 of 72 tight cuts of 8 real faces as they are; 39 with a border of the photo's median colour 0.25 wide
# (0.1: 23, 0.5: 34, 1.0: 26; grey 30, black 10, replicated edges 26, mirrored 27). Looking again costs 1.2-2.6x
# the first look, on photos without a face only.
DETECTION_BORDER = 0.25


@dataclass
class DetectedFace:
    bbox: np.ndarray  # x1, y1, x2, y2 in image pixels
    score: float  # detector confidence
    kps: np.ndarray | None  # 5 landmarks (eyes, nose, mouth corners) or None
    embedding: np.ndarray  # L2-normalised identity vector
    ignored: str | None = None  # why this box is not taken for a face (a false detection), in words

    @property
    def size(self) -> float:
        return float(min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1]))

    @property
    def center(self) -> tuple[float, float]:
        return float(self.bbox[0] + self.bbox[2]) / 2, float(self.bbox[1] + self.bbox[3]) / 2


class FaceBackend:
    name = "base"
    label = ""
    has_landmarks = False
    # Whether the embedding tells people apart. Without it (the offline LBP fallback: ROC AUC 0.78 on 8 people),
    # faces are still found and checked, but nobody is rejected as someone else and there is no likeness score.
    identifies_people = False
    same_person_threshold = 0.3  # cosine to the person's identity below this = someone else
    stranger_similarity = 0.0  # the cosine of a typical stranger
    duplicate_threshold = 0.995  # similarity above this between two photos = the same photo

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Every box the detector found, false detections included (marked `ignored`, with the reason)."""
        raise NotImplementedError

    def analyze(self, rgb: np.ndarray) -> list[DetectedFace]:
        """The faces: what every decision uses (training crops, portraits, likeness). Ignored boxes are left out.
        When there are none, the photo is looked at again with a border around it (`detect_padded`)."""
        faces = [f for f in self.detect(rgb) if f.ignored is None]
        return faces or [f for f in self.detect_padded(rgb) if f.ignored is None]

    def detect_padded(self, rgb: np.ndarray) -> list[DetectedFace]:
        """`detect` on a copy with a plain border of the photo's median colour, boxes and landmarks given in the
        photo's own pixels (they may reach past its edges). Detectors look for a head with some background around
        it: dlib finds none in the astronaut's face cut 10 px inside its box, and finds it with this border."""
        import cv2

        rgb = np.ascontiguousarray(rgb[..., :3])
        pad = round(DETECTION_BORDER * max(rgb.shape[:2]))
        colour = np.median(rgb[::4, ::4].reshape(-1, 3), axis=0).tolist()
        faces = self.detect(cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=colour))
        for f in faces:
            f.bbox = f.bbox - pad
            f.kps = None if f.kps is None else f.kps - pad
        return faces

    def likeness(self, cosine: float, full: float = 1.0) -> float:
        """A 0-1 scale that means the same on every backend: 0 = a typical stranger, 0.5 = the same-person
        threshold, 1 = the cosine `full` (an identical face unless told; the user's own spread: faces.likeness);
        piecewise linear in the backend's cosine between those points."""
        t, s = self.same_person_threshold, self.stranger_similarity
        value = 0.5 * (cosine - s) / (t - s) if cosine < t else 0.5 + 0.5 * (cosine - t) / (full - t)
        return float(min(1.0, max(0.0, value)))


def normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-8)


def identity_of(embeddings: list[np.ndarray], threshold: float) -> np.ndarray:
    """The set's identity, robust to strangers in it: the medoid (the face most alike to all the others), then
    the mean of the faces that pass the same-person threshold against it. A plain mean lets 2 strangers in 6
    photos pull it towards themselves until they pass."""
    e = np.stack([normalize(v) for v in embeddings])
    sims = e @ e.T
    medoid = int(np.argmax(sims.sum(axis=1)))
    core = sims[medoid] >= threshold
    return normalize(e[core].mean(axis=0))
