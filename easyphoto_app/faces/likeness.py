"""Likeness of images to a user: the RL reward, the ranking of candidates, checkpoint validation, captions and
`likeness`. What the number means, in one place:

- It is measured against the user's set of accepted faces, not one photo: the image's best face gets the mean of
  its TOP best cosines to the set's faces (all of them when the set has fewer). A copy of one photo gets 1 from
  that photo, but from the others only what that photo itself gets from them.
- It is 0-1 and piecewise linear in that cosine: 0 = a typical stranger, 0.5 = the same-person threshold (both
  the backend's, `FaceBackend.likeness`), 1 = as alike as the user's own photos are to each other (`full`: the
  median of each accepted face's score against the other accepted faces). Closer than that earns nothing more,
  so RL has nothing to gain from copying one photo.
- A set of one face (an old reference.json that cannot be upgraded) has no spread: there 1 means identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from easyphoto_app.errors import UserError
from easyphoto_app.faces import get_backend, recognizer_missing
from easyphoto_app.faces.base import FaceBackend, normalize
from easyphoto_app.faces.prepare import load_reference, reference_faces
from easyphoto_app.workspace import Workspace

TOP = 3  # the best cosines averaged: no single photo decides
MIN_HEADROOM = 0.1  # full marks lie at least this share of the way from the threshold to an identical face
SCALE_WORDS = "0 stranger, 0.5 threshold, 1 as alike as their own photos"  # how captions and messages say it


@dataclass
class Score:
    """One image's likeness, or why it has none (as `likeness --json` prints it: dataclasses.asdict)."""

    likeness: float | None  # None: no face
    cosine: float | None  # the mean of the face's TOP best cosines to the user's faces
    faces: int
    face_index: int | None  # which face was scored (0-based, left to right)
    reason: str  # in words, for people


def set_cosine(embedding: np.ndarray, faces: np.ndarray) -> float:
    """The mean of the TOP best cosines of one embedding to a set of faces (rows, L2-normalised)."""
    cosines = np.sort(faces @ embedding)[::-1]
    return float(cosines[:TOP].mean())


def full_marks(faces: np.ndarray, backend: FaceBackend) -> float:
    """The cosine that earns 1: how alike the set's faces are to each other (each scored against the others), never
    closer to the threshold than MIN_HEADROOM allows; 1.0 for a set of one."""
    if len(faces) < 2:
        return 1.0
    own = np.median([set_cosine(faces[i], np.delete(faces, i, axis=0)) for i in range(len(faces))])
    t = backend.same_person_threshold
    return float(min(1.0, max(own, t + MIN_HEADROOM * (1.0 - t))))


class LikenessScorer:
    """images -> the likeness of their best face; 0 (and counted in no_face_rate) when there is none."""

    def __init__(self, backend: FaceBackend, faces):
        self.backend = backend
        self.faces = np.stack([normalize(f) for f in np.atleast_2d(np.asarray(faces, dtype=np.float32))])
        self.full = full_marks(self.faces, backend)

    def likeness(self, embedding: np.ndarray) -> tuple[float, float]:
        """(likeness, cosine) of one face embedding."""
        cosine = set_cosine(normalize(embedding), self.faces)
        return self.backend.likeness(cosine, self.full), cosine

    def score(self, image) -> Score:
        faces = self.backend.analyze(np.asarray(image.convert("RGB") if hasattr(image, "convert") else image))
        if not faces:
            return Score(None, None, 0, None, "no face found")
        faces = sorted(faces, key=lambda f: f.bbox[0])
        scored = [self.likeness(f.embedding) for f in faces]
        best = int(np.argmax([cosine for _, cosine in scored]))
        reason = (
            "one face"
            if len(faces) == 1
            else f"{len(faces)} faces: scored the most alike, face {best + 1} from the left"
        )
        return Score(round(scored[best][0], 4), round(scored[best][1], 4), len(faces), best, reason)

    def __call__(self, images) -> tuple[list[float], dict]:
        scores = [self.score(img).likeness for img in images]
        rewards = [0.0 if s is None else s for s in scores]
        no_face = sum(s is None for s in scores) / max(len(scores), 1)
        return rewards, {"no_face_rate": no_face}

    def scale(self) -> dict:
        """The cosines at 0, 0.5 and 1, and the size of the set (for `likeness --json`)."""
        return {
            "stranger": self.backend.stranger_similarity,
            "threshold": self.backend.same_person_threshold,
            "full": round(self.full, 4),
            "faces": len(self.faces),
        }


def scorer_for(ws: Workspace, user: str) -> LikenessScorer:
    ref = load_reference(ws, user)
    backend = get_backend(ref["backend"], ws.root)
    if not backend.identifies_people:
        raise UserError(
            f"No likeness score for '{user}': the photos were checked without a face recognizer "
            f"({recognizer_missing()}). Install it (./run.sh --install-only or run.bat), then add the "
            "photos again."
        )
    return LikenessScorer(backend, reference_faces(ws, user, ref, backend))


def scorer_or_none(ws: Workspace, user: str) -> LikenessScorer | None:
    """For optional scores (checkpoint validation, Compare captions): None without a usable reference."""
    try:
        return scorer_for(ws, user)
    except UserError:
        return None
