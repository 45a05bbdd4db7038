"""The face backend interface and shared geometry."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
        """The faces: what every decision uses (training crops, portraits, likeness). Ignored boxes are left out."""
        return [f for f in self.detect(rgb) if f.ignored is None]

    def likeness(self, cosine: float) -> float:
        """A 0-1 scale that means the same on every backend: 0 = a typical stranger, 0.5 = the same-person
        threshold, 1 = an identical face; piecewise linear in the backend's cosine between those points."""
        t, s = self.same_person_threshold, self.stranger_similarity
        value = 0.5 * (cosine - s) / (t - s) if cosine < t else 0.5 + 0.5 * (cosine - t) / (1.0 - t)
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
