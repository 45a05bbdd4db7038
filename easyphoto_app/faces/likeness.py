"""Likeness of generated images to a user: the RL reward, checkpoint validation, Compare captions."""

from __future__ import annotations

import numpy as np

from easyphoto_app.faces import get_backend
from easyphoto_app.faces.base import FaceBackend, normalize
from easyphoto_app.workspace import Workspace


class LikenessScorer:
    """images -> cosine similarity of the best face to the user's mean face; 0 when no face."""

    def __init__(self, backend: FaceBackend, mean_embedding):
        self.backend = backend
        self.target = normalize(np.asarray(mean_embedding, dtype=np.float32))

    def score_one(self, image) -> float | None:
        faces = self.backend.analyze(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image))
        if not faces:
            return None
        return max(float(f.embedding @ self.target) for f in faces)

    def __call__(self, images) -> tuple[list[float], dict]:
        raw = [self.score_one(img) for img in images]
        rewards = [0.0 if r is None else r for r in raw]
        no_face = sum(r is None for r in raw) / max(len(raw), 1)
        return rewards, {"no_face_rate": no_face}


def scorer_for(ws: Workspace, user: str) -> LikenessScorer:
    from easyphoto_app.faces.prepare import load_reference

    ref = load_reference(ws, user)
    return LikenessScorer(get_backend(ref["backend"], ws.root), ref["mean_embedding"])


def scorer_or_none(ws: Workspace, user: str) -> LikenessScorer | None:
    """For optional scores (checkpoint validation, Compare captions): None without a reference face."""
    from easyphoto_app.errors import UserError

    try:
        return scorer_for(ws, user)
    except UserError:
        return None
