"""Likeness of images to a user: the RL reward, checkpoint validation, Compare captions and `likeness`.

One number everywhere: the backend's 0-1 likeness (FaceBackend.likeness) of the face most alike to the
user's identity, so it means the same whichever backend measured it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from easyphoto_app.errors import UserError
from easyphoto_app.faces import get_backend
from easyphoto_app.faces.base import FaceBackend, normalize
from easyphoto_app.workspace import Workspace


@dataclass
class Score:
    """One image's likeness, or why it has none (as `likeness --json` prints it: dataclasses.asdict)."""

    likeness: float | None  # None: no face
    cosine: float | None
    faces: int
    face_index: int | None  # which face was scored (0-based, left to right)
    reason: str  # in words, for people


class LikenessScorer:
    """images -> the likeness of their best face; 0 (and counted in no_face_rate) when there is none."""

    def __init__(self, backend: FaceBackend, identity):
        self.backend = backend
        self.target = normalize(np.asarray(identity, dtype=np.float32))

    def score(self, image) -> Score:
        faces = self.backend.analyze(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image))
        if not faces:
            return Score(None, None, 0, None, "no face found")
        faces = sorted(faces, key=lambda f: f.bbox[0])
        cosines = [float(f.embedding @ self.target) for f in faces]
        best = int(np.argmax(cosines))
        reason = "one face" if len(faces) == 1 else f"{len(faces)} faces: scored the most alike, face {best + 1} from the left"
        return Score(round(self.backend.likeness(cosines[best]), 4), round(cosines[best], 4), len(faces), best, reason)

    def __call__(self, images) -> tuple[list[float], dict]:
        scores = [self.score(img).likeness for img in images]
        rewards = [0.0 if s is None else s for s in scores]
        no_face = sum(s is None for s in scores) / max(len(scores), 1)
        return rewards, {"no_face_rate": no_face}


def scorer_for(ws: Workspace, user: str) -> LikenessScorer:
    from easyphoto_app.faces import recognizer_missing
    from easyphoto_app.faces.prepare import load_reference

    ref = load_reference(ws, user)
    backend = get_backend(ref["backend"], ws.root)
    if not backend.identifies_people:
        raise UserError(f"No likeness score for '{user}': the photos were checked without a face recognizer "
                        f"({recognizer_missing()}). Install it (./run.sh --install-only or run.bat), then add the photos again.")
    return LikenessScorer(backend, ref["mean_embedding"])


def scorer_or_none(ws: Workspace, user: str) -> LikenessScorer | None:
    """For optional scores (checkpoint validation, Compare captions): None without a usable reference."""
    try:
        return scorer_for(ws, user)
    except UserError:
        return None

