"""Which border lets dlib find a face that fills the frame, and what looking again costs. Prints JSON.

Tight cuts of 8 real faces (the astronaut, Tom Hanks and the 6 people of insightface's t1.jpg): each face's box,
as dlib finds it in the whole photo, shrunk by 10-25% of its side on every side (the chin, brows and ears cut off,
as in a close-up selfie), at 0.5x, 1x and 3x. For each border added around the cut before detection (none; the
photo's median colour, grey or black, replicated or mirrored edges; each a fraction of the cut's longer side wide),
how many cuts dlib finds a face in whose centre lies in the true box. Then the seconds a second look costs on photos
without a face (every photo of them is looked at twice).
"""

import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import photos  # noqa: E402

from easyphoto_app.faces.dlib_backend import DlibBackend  # noqa: E402
from easyphoto_app.faces.images import load_rgb  # noqa: E402

CUTS = (0.10, 0.175, 0.25)
SCALES = (0.5, 1.0, 3.0)


def faces(backend) -> list[tuple[np.ndarray, np.ndarray]]:
    """(photo, face box) for the 8 people."""
    out = []
    for img in (
        photos.astronaut(),
        load_rgb(photos.insightface_image("Tom_Hanks_54745.png")),
        load_rgb(photos.insightface_image("t1.jpg")),
    ):
        out += [(img, f.bbox) for f in backend.analyze(img)]
    return out


def tight_cuts(people) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cut, the true box in the cut's pixels)."""
    out = []
    for img, (x1, y1, x2, y2) in people:
        for cut in CUTS:
            d = cut * (x2 - x1)
            left, top = int(max(0, x1 + d)), int(max(0, y1 + d))
            part = img[top : int(y2 - d), left : int(x2 - d)]
            for k in SCALES:
                small = cv2.resize(part, None, fx=k, fy=k, interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
                out.append((small, (np.array([x1, y1, x2, y2]) - [left, top, left, top]) * k))
    return out


def bordered(img: np.ndarray, kind: str, frac: float) -> np.ndarray:
    pad = round(frac * max(img.shape[:2]))
    modes = {"replicate": cv2.BORDER_REPLICATE, "mirror": cv2.BORDER_REFLECT}
    if kind in modes:
        return cv2.copyMakeBorder(img, pad, pad, pad, pad, modes[kind]), pad
    colour = {"median": np.median(img.reshape(-1, 3), axis=0).tolist(), "grey": [128] * 3, "black": [0] * 3}[kind]
    return cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=colour), pad


def found(backend, img, box, kind, frac) -> bool:
    padded, pad = (img, 0) if kind == "none" else bordered(img, kind, frac)
    for f in backend.detect(padded):
        cx, cy = f.center[0] - pad, f.center[1] - pad
        if f.ignored is None and box[0] <= cx <= box[2] and box[1] <= cy <= box[3]:
            return True
    return False


def main():
    backend = DlibBackend()
    cuts = tight_cuts(faces(backend))
    borders = (
        [("none", 0)]
        + [("median", f) for f in (0.1, 0.25, 0.5, 1.0)]
        + [(k, 0.25) for k in ("grey", "black", "replicate", "mirror")]
    )
    table = {f"{k} {f}": sum(found(backend, img, box, k, f) for img, box in cuts) for k, f in borders}
    from skimage import data

    costs = {}
    for name, img in {
        "cat 451x300": data.chelsea(),
        "coffee 600x400": data.coffee(),
        "coffee 1800x1200": cv2.resize(data.coffee(), (1800, 1200)),
    }.items():
        start = time.perf_counter()
        backend.detect(img)
        once = time.perf_counter() - start
        start = time.perf_counter()
        backend.detect_padded(img)
        costs[name] = {"detect_s": round(once, 3), "again_padded_s": round(time.perf_counter() - start, 3)}
    print(json.dumps({"cuts": len(cuts), "found": table, "no_face_cost": costs}, indent=1))


if __name__ == "__main__":
    main()
