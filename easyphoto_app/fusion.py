"""Face fusion: the user's own face warped onto a template's face at five landmarks, colour-matched, blended in.

Plain functions on arrays (landmarks in, a transform out; an image and a mask in, a blend out). The portrait
fuses before painting, so that the LoRA paints over the person's own eyes, nose and mouth at a low strength, and
once more after painting, at a weight, so that they keep the person's shape. Landmarks are the backends' five
points (left eye, right eye, nose, left and right mouth corner, image left/right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from easyphoto_app.faces.base import DetectedFace
from easyphoto_app.faces.images import BadImage, load_rgb
from easyphoto_app.faces.prepare import load_record

# Yaw is the nose's offset from the eyes' midpoint along the eye line, in half eye distances (0 = frontal,
# 1 = the nose under an eye). Measured with dlib: the astronaut 0.05, Tom Hanks 0.18, Joe Biden 0.22, the faces of
# insightface's t1.jpg -0.73 (turned about 40 degrees, one eye half hidden) to 0.12, Coelho's three-quarter view -0.70.
PROFILE_YAW = 0.65
MIN_EYE_PX = 16  # eyes closer than this (pixels) leave too few to warp a face onto, or to take one from
POSE_TIE = 0.1  # sources whose pose is this close to the best one's count as equally close: quality decides
ROLL_PER_YAW = 90.0  # degrees of roll that weigh as much as a yaw of 1 in the pose distance
# The fusion mask, in eye distances (d) around the landmarks: from the brows to below the mouth, cheek to cheek.
MASK_ABOVE_EYES, MASK_BELOW_MOUTH, MASK_HALF_WIDTH = 0.55, 0.45, 0.95
# Its soft edge: Gaussian sigma in eye distances. Measured on 21 pairs of real faces (3 people fused into 7 faces of
# other people: the astronaut, Biden, Coelho, Tom Hanks, 4 of t1.jpg), the step across the mask's edge against the
# template's own there, and the dlib distance to the person: sigma 0.12: 1.07x (max 1.54x), 0.494; 0.2: 0.92x (max
# 1.32x), 0.502; 0.3: 0.83x, 0.521. OpenCV's seamless cloning: 1.00x (max 1.05x) but 0.575, as it takes the
# template's shading into the face: a feathered blend it is.
MASK_FEATHER = 0.2


def _eyes(kps: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The eyes' midpoint, the unit vector from the left eye to the right one, and their distance."""
    left, right = np.asarray(kps[0], np.float64), np.asarray(kps[1], np.float64)
    dist = float(np.linalg.norm(right - left))
    return (left + right) / 2, (right - left) / max(dist, 1e-6), dist


def yaw(kps: np.ndarray) -> float:
    """The head's turn, signed: the nose's offset from the eyes' midpoint along the eye line, in half eye distances."""
    mid, across, dist = _eyes(kps)
    return float(np.dot(np.asarray(kps[2], np.float64) - mid, across) / max(dist / 2, 1e-6))


def roll(kps: np.ndarray) -> float:
    """Degrees the eye line is tilted (positive: the right eye lower)."""
    _, across, _ = _eyes(kps)
    return float(np.degrees(np.arctan2(across[1], across[0])))


def why_not_source(face: DetectedFace) -> str | None:
    """Why a face cannot be taken for fusion, in words, or None. Any pose will do: the closest one is chosen."""
    if face.kps is None:
        return "its eyes were not found"
    eyes = _eyes(face.kps)[2]
    if eyes < MIN_EYE_PX:
        return f"it is too small (eyes {eyes:.0f} px apart; fusion needs {MIN_EYE_PX})"
    return None


def why_not_fusable(face: DetectedFace) -> str | None:
    """Why a template's face cannot be fused into, in words, or None."""
    if face.kps is not None and abs(yaw(face.kps)) > PROFILE_YAW:
        return "it is turned too far from the camera (nearly in profile)"
    return why_not_source(face)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, shift) that maps the points src onto dst with the least squared
    error (Umeyama's closed form; no reflection)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    s_mean, d_mean = src.mean(0), dst.mean(0)
    s, d = src - s_mean, dst - d_mean
    u, sing, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ flip @ vt
    scale = float(np.trace(np.diag(sing) @ flip)) / max(float((s**2).sum(1).mean()), 1e-12)
    return np.hstack([scale * rot, (d_mean - scale * rot @ s_mean)[:, None]]).astype(np.float32)


def face_mask(kps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Alpha (0..1, float32) over the inner face, from the brows to below the mouth and cheek to cheek, tilted with
    the eyes and soft at its edge: the template's hair line, jaw and ears stay outside it."""
    import cv2

    mid, across, dist = _eyes(kps)
    down = np.array([-across[1], across[0]])
    mouth = float(np.dot((np.asarray(kps[3], np.float64) + kps[4]) / 2 - mid, down))
    top, bottom = -MASK_ABOVE_EYES * dist, mouth + MASK_BELOW_MOUTH * dist
    centre = mid + down * (top + bottom) / 2
    axes = (max(1, round(MASK_HALF_WIDTH * dist)), max(1, round((bottom - top) / 2)))
    hard = np.zeros(shape[:2], np.float32)
    cv2.ellipse(hard, (round(centre[0]), round(centre[1])), axes, roll(kps), 0, 360, 1.0, -1)
    sigma = MASK_FEATHER * dist
    alpha = cv2.GaussianBlur(hard, (0, 0), sigma)
    alpha[alpha < 1 / 512] = 0.0
    return alpha


def match_colour(painted: np.ndarray, reference: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """painted with the mean and spread of reference's colour (in LAB) inside the mask."""
    import cv2

    inside = alpha > 0.5
    if inside.sum() < 16:
        return painted
    src = cv2.cvtColor(painted, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src[inside].mean(0), src[inside].std(0) + 1e-3
    r_mean, r_std = ref[inside].mean(0), ref[inside].std(0)
    out = (src - s_mean) / s_std * r_std + r_mean
    return cv2.cvtColor(np.clip(out, 0, 255).round().astype(np.uint8), cv2.COLOR_LAB2RGB)


def blend(target: np.ndarray, face: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """face over target through alpha; target untouched where alpha is 0."""
    a = alpha[..., None]
    mixed = target.astype(np.float32) * (1 - a) + face.astype(np.float32) * a
    return np.clip(mixed, 0, 255).round().astype(np.uint8)


@dataclass
class Source:
    """One of the user's faces that fusion may take: its image, the face in it and how good a photo it is."""

    image: np.ndarray
    face: DetectedFace
    quality: float
    name: str = ""


def best_source(target: DetectedFace, sources: list[Source]) -> Source | None:
    """The source posed most like target (yaw, then roll); among those about as close (POSE_TIE), the best photo."""
    if not sources:
        return None

    def gap(s: Source) -> float:
        return abs(yaw(s.face.kps) - yaw(target.kps)) + abs(roll(s.face.kps) - roll(target.kps)) / ROLL_PER_YAW

    closest = min(gap(s) for s in sources)
    return max((s for s in sources if gap(s) <= closest + POSE_TIE), key=lambda s: s.quality)


def fuse(target: np.ndarray, kps: np.ndarray, source: Source, weight: float = 1.0) -> np.ndarray:
    """source's face warped onto the face whose landmarks in target are kps, its colour matched to target's inside
    the face mask, blended in at weight (0 = target as it is, 1 = the source's inner face)."""
    import cv2

    h, w = target.shape[:2]
    warp = similarity(source.face.kps, kps)
    warped = cv2.warpAffine(source.image, warp, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    alpha = face_mask(kps, target.shape)
    return blend(target, match_colour(warped, target, alpha), alpha * float(weight))


def edge_step(image: np.ndarray, alpha: np.ndarray, reach: int = 2) -> float:
    """The mean colour step (LAB distance) across the mask's edge: between the pixels `reach` px inside and outside
    each point of the alpha = 0.5 contour, along the contour's normal. A seam shows as a step larger than the image's
    own at the same place."""
    import cv2

    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    hard = (alpha >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(hard, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    points = np.concatenate([c[:, 0] for c in contours]).astype(np.float64)
    gy, gx = np.gradient(cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), 2.0))
    xi, yi = points[:, 0].astype(int), points[:, 1].astype(int)
    normal = np.stack([gx[yi, xi], gy[yi, xi]], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)  # points into the mask
    h, w = alpha.shape

    def at(offset: float) -> np.ndarray:
        p = np.rint(points + offset * normal).astype(int)
        return lab[np.clip(p[:, 1], 0, h - 1), np.clip(p[:, 0], 0, w - 1)]

    return float(np.linalg.norm(at(reach) - at(-reach), axis=1).mean())


# ----------------------------------------------------------------------------- the user's faces


def user_sources(ws, user: str, backend) -> list[Source]:
    """The user's accepted face crops (faces.json) that fusion can take, each with its face and landmarks."""
    record = load_record(ws, user) or {"photos": []}
    sources = []
    for photo in record["photos"]:
        if not photo.get("accepted") or not photo.get("crop"):
            continue
        try:
            image = load_rgb(Path(ws.root) / photo["crop"])
        except (BadImage, FileNotFoundError):
            continue
        faces = [f for f in backend.analyze(image) if why_not_source(f) is None]
        if faces:
            scores = photo.get("scores", {})
            quality = scores.get("similarity", 1.0) * scores.get("sharpness", 1.0)
            sources.append(Source(image, max(faces, key=lambda f: f.size), float(quality), photo["source"]))
    return sources


def pick(target: DetectedFace, sources: list[Source]) -> tuple[Source | None, str | None]:
    """The user's face to fuse into target, or None and why not (in words)."""
    why = why_not_fusable(target)
    if why is None and not sources:
        why = "none of the user's accepted photos has a face whose eyes could be found"
    return (None, why) if why else (best_source(target, sources), None)
