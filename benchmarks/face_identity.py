"""How well each face backend tells people apart, on real photos that packages ship. Prints JSON.

usage: python benchmarks/face_identity.py [--looks 20] [--backends dlib,offline]
People: skimage's astronaut, insightface's Tom Hanks, and the 6 people of insightface's t1.jpg (a group
photo), each cropped with context and turned into `looks` different images (scale, light, turn, mirror,
blur, JPEG). For every pair of looks: the cosine of the backends' face embeddings. Same-person and
different-people pairs give the ROC AUC and percentiles that set each backend's thresholds.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def people() -> dict[str, np.ndarray]:
    """One image per person, the face with context around it."""
    import photos
    from PIL import Image

    from easyphoto_app.faces.dlib_backend import DlibBackend

    found = {
        "astronaut": photos.astronaut()[0:300, 100:380],
        "hanks": np.asarray(
            Image.open(photos.insightface_image("Tom_Hanks_54745.png"))
            .convert("RGB")
            .resize((336, 336), Image.Resampling.LANCZOS)
        ),
    }
    group = np.asarray(Image.open(photos.insightface_image("t1.jpg")).convert("RGB"))
    for i, face in enumerate(sorted(DlibBackend().analyze(group), key=lambda f: f.bbox[0])):
        x1, y1, x2, y2 = face.bbox
        pad = 0.6 * (x2 - x1)
        h, w = group.shape[:2]
        found[f"t1_person{i}"] = group[
            int(max(0, y1 - pad)) : int(min(h, y2 + pad)), int(max(0, x1 - pad)) : int(min(w, x2 + pad))
        ]
    return found


def looks(img: np.ndarray, n: int, seed: int) -> list[np.ndarray]:
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        side = int(rng.uniform(220, 480))
        a = cv2.resize(img, (side, int(side * img.shape[0] / img.shape[1])), interpolation=cv2.INTER_CUBIC)
        m = cv2.getRotationMatrix2D((a.shape[1] / 2, a.shape[0] / 2), rng.uniform(-8, 8), 1.0)
        a = cv2.warpAffine(a, m, (a.shape[1], a.shape[0]), borderMode=cv2.BORDER_REFLECT)
        a = np.clip(a.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20), 0, 255).astype(np.uint8)
        if k % 2:
            a = a[:, ::-1]
        if rng.random() < 0.3:
            a = cv2.GaussianBlur(a, (0, 0), rng.uniform(0.5, 1.5))
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=int(rng.uniform(60, 95)))
        out.append(np.asarray(Image.open(buf).convert("RGB")))
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a same-person pair scores above a different-people pair)."""
    ranks = np.argsort(np.argsort(np.concatenate([pos, neg]))) + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def measure(backend, sets: dict[str, list[np.ndarray]]) -> dict:
    from easyphoto_app.faces.prepare import _main_face

    t0 = time.perf_counter()
    emb, who, missed = [], [], 0
    for name, imgs in sets.items():
        for img in imgs:
            faces = backend.analyze(img)
            if not faces:
                missed += 1
                continue
            emb.append(_main_face(faces, img.shape).embedding)
            who.append(name)
    e, who = np.stack(emb), np.array(who)
    sims = e @ e.T
    upper = np.triu(np.ones_like(sims, dtype=bool), 1)
    same = sims[upper & (who[:, None] == who[None, :])]
    diff = sims[upper & (who[:, None] != who[None, :])]
    pct = lambda x, q: round(float(np.percentile(x, q)), 4)  # noqa: E731
    return {
        "backend": backend.name,
        "faces": len(emb),
        "no_face": missed,
        "auc": round(auc(same, diff), 4),
        "same": {"p1": pct(same, 1), "p5": pct(same, 5), "median": pct(same, 50), "min": round(float(same.min()), 4)},
        "different": {
            "median": pct(diff, 50),
            "p95": pct(diff, 95),
            "p99": pct(diff, 99),
            "max": round(float(diff.max()), 4),
        },
        "seconds_per_image": round((time.perf_counter() - t0) / (len(emb) + missed), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--looks", type=int, default=20)
    ap.add_argument("--backends", default="dlib,offline")
    a = ap.parse_args()
    from easyphoto_app.faces.dlib_backend import DlibBackend
    from easyphoto_app.faces.offline import OfflineBackend

    sets = {name: looks(img, a.looks, seed) for seed, (name, img) in enumerate(people().items())}
    make = {"dlib": DlibBackend, "offline": OfflineBackend}
    result = {
        "benchmark": "face_identity",
        "people": len(sets),
        "looks_each": a.looks,
        "backends": [measure(make[b](), sets) for b in a.backends.split(",")],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
