"""Alignment and the per-face scores (sharpness, exposure, frontalness, near-duplicate hash)."""

from __future__ import annotations

import math

import numpy as np

from easyphoto_app.faces.base import DetectedFace

CONTEXT = 2.2  # crop side = CONTEXT x face size: hair, chin and some background
SHARPNESS_SCALE = 60.0  # Laplacian variance at which sharpness reaches 0.5
# Past the photo's edge (backdrop): blur sigma and fade distance as fractions of the crop side; plain colour darkening.
BACKDROP_BLUR = 0.06
BACKDROP_FADE = 0.25
BACKDROP_DARKEN = 0.7


def eye_angle(face: DetectedFace) -> float:
    """Degrees to rotate so the eyes are level (0 without landmarks)."""
    if face.kps is None:
        return 0.0
    (lx, ly), (rx, ry) = face.kps[0], face.kps[1]
    return math.degrees(math.atan2(ry - ly, rx - lx))


def align_crop(rgb: np.ndarray, face: DetectedFace, size: int) -> np.ndarray:
    """A size x size crop centred on the face, eyes level, with context around it. Where the crop reaches past the
    photo's edge it shows a blurred copy of the photo fading into a darker plain colour (`backdrop`), not the edge
    pixels stretched into streaks; what lies inside the photo is left as it is."""
    import cv2

    inside = photo_mask(rgb.shape, face, size)
    shrink = min(1.0, _scale(face, size))
    if shrink < 1:  # warpAffine has no area filter (INTER_AREA acts as linear there), so shrinking there aliases
        rgb = cv2.resize(rgb, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    m = _transform(face, size, shrink)
    crop = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    if inside.min() == 1.0:
        return crop
    mirrored = cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    a = inside[..., None]
    return np.rint(crop * a + backdrop(mirrored, inside) * (1 - a)).astype(np.uint8)


def _scale(face: DetectedFace, size: int) -> float:
    return size / (CONTEXT * max(face.bbox[2] - face.bbox[0], face.bbox[3] - face.bbox[1]))


def _transform(face: DetectedFace, size: int, shrink: float = 1.0) -> np.ndarray:
    """The 2x3 matrix from the photo, shrunk by `shrink` first, onto the crop."""
    import cv2

    cx, cy = face.center[0] * shrink, face.center[1] * shrink
    m = cv2.getRotationMatrix2D((cx, cy), eye_angle(face), _scale(face, size) / shrink)
    m[0, 2] += size / 2 - cx
    m[1, 2] += size / 2 - cy
    return m


def photo_mask(shape: tuple, face: DetectedFace, size: int) -> np.ndarray:
    """How much of each pixel of the face's crop lies inside a photo of this shape: 1 inside, 0 past its edge, a
    ramp one photo pixel wide between (what sampling an all-ones photo with a zero border gives)."""
    import cv2

    inverse = cv2.invertAffineTransform(_transform(face, size))
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    y = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    h, w = shape[:2]
    return np.clip(np.minimum.reduce([x + 1, w - x, y + 1, h - y]), 0.0, 1.0)


def backdrop(mirrored: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """What a crop shows past the photo's edge (FFHQ's recipe for its aligned faces): the photo mirrored at its edge
    and blurred, fading with the distance from the edge into the photo's median colour, darkened."""
    import cv2

    size = inside.shape[0]
    soft = cv2.GaussianBlur(mirrored.astype(np.float32), (0, 0), BACKDROP_BLUR * size)
    away = cv2.distanceTransform((inside < 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    fade = np.clip(away / (BACKDROP_FADE * size), 0.0, 1.0)[..., None]
    plain = np.median(mirrored[inside >= 0.5], axis=0) * BACKDROP_DARKEN
    return soft * (1 - fade) + plain * fade


def _gray(rgb: np.ndarray, side: int) -> np.ndarray:
    import cv2

    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


def face_region(crop: np.ndarray) -> np.ndarray:
    """The face itself inside an aligned crop (the middle 1/CONTEXT)."""
    n = crop.shape[0]
    half = round(n / CONTEXT / 2)  # int() made 220 / 2.2 / 2 = 49.999... into 49
    return crop[n // 2 - half : n // 2 + half, n // 2 - half : n // 2 + half]


def sharpness(rgb: np.ndarray) -> float:
    """0 (blurred) .. 1 (sharp): variance of the Laplacian at a fixed 128 px scale."""
    import cv2

    var = float(cv2.Laplacian(_gray(rgb, 128), cv2.CV_32F).var())
    return var / (var + SHARPNESS_SCALE)


def exposure(rgb: np.ndarray) -> float:
    """1 for mid-grey brightness, 0 for black or white."""
    mean = float(_gray(rgb, 64).mean()) / 255.0
    return max(0.0, 1.0 - abs(mean - 0.5) * 2)


def frontalness(face: DetectedFace, crop_face: np.ndarray) -> float:
    """From landmarks (nose between the eyes) when present, else left-right symmetry."""
    if face.kps is not None:
        (lx, _), (rx, _), (nx, _) = face.kps[0], face.kps[1], face.kps[2]
        half_eyes = max(abs(rx - lx) / 2, 1e-3)
        return float(max(0.0, 1.0 - abs(nx - (lx + rx) / 2) / half_eyes))
    g = _gray(crop_face, 64)
    g = g - g.mean()
    mirror = g[:, ::-1]
    energy = float((g * g).sum())  # the mirror's too: the same pixels
    return float(max(0.0, (g * mirror).sum() / energy)) if energy else 0.0


def dhash(rgb: np.ndarray) -> int:
    """A 64-bit difference hash: near-identical crops differ in few bits."""
    import cv2

    g = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    return bin(a ^ b).count("1")
