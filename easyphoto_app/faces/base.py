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
    # Whether the embedding tells people apart. The offline LBP descriptor does not (ROC AUC 0.80 on 8 people), so
    # a photo with several detections keeps its largest, most central face instead of the most "alike" one.
    identifies_people = False
    same_person_threshold = 0.3  # similarity to the set's mean below this = someone else
    duplicate_threshold = 0.995  # similarity above this between two photos = the same photo

    def analyze(self, rgb: np.ndarray) -> list[DetectedFace]:
        raise NotImplementedError


def normalize(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-8)
