"""How well dlib's CNN check tells false detections from faces, and what it costs. Prints JSON.

Every HOG box on photos that packages ship (the astronaut and her looks, her photo pasted into scenes, insightface's
group photo and Tom Hanks) is listed with its HOG score, whether it is a face, and the check's verdict (it runs on
boxes under CHECK_BELOW only). Whether a box is a face is known without the check: in the pasted scenes by where her
face was pasted; in her looks by the recognizer (the same person as her photo: cosine >= 0.92); in the group photo
and Tom Hanks' every box is a face (looked at).
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import photos  # noqa: E402

from easyphoto_app.faces.dlib_backend import CHECK_BELOW, DlibBackend  # noqa: E402
from easyphoto_app.faces.images import load_rgb  # noqa: E402

# Where the real faces of these photos are: the astronaut's face centre in her 512x512 photo, per look.
ASTRONAUT_FACE = (225, 110)


def images(folder: Path) -> dict[str, tuple[np.ndarray, list[tuple[float, float]] | None]]:
    """name -> (pixels, the pasted face's centre; None where the recognizer or a look decides, see main)."""
    a = photos.astronaut()
    out = {}
    for x, y in [(300, 200), (100, 50), (600, 300)]:
        canvas = np.full((900, 1200, 3), 90, np.uint8)
        canvas[y : y + 512, x : x + 512] = a
        out[f"pasted_{x}_{y}"] = (canvas, [(x + ASTRONAUT_FACE[0], y + ASTRONAUT_FACE[1])])
    for path in photos.astronaut_set(folder):
        out[path.name] = (load_rgb(path), None)
    out["scene.jpg"] = (load_rgb(photos.scene(folder / "scene.jpg")), None)
    for name in ["t1.jpg", "Tom_Hanks_54745.png"]:
        out[name] = (load_rgb(photos.insightface_image(name)), None)
    return out


def main() -> None:
    backend = DlibBackend()
    her = max(backend.detect(photos.astronaut()), key=lambda f: f.score).embedding
    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (rgb, centres) in images(Path(tmp)).items():
            t0 = time.perf_counter()
            boxes = backend.detect(rgb)
            seconds = time.perf_counter() - t0
            for f in boxes:
                if centres is not None:
                    face = any(f.bbox[0] < cx < f.bbox[2] and f.bbox[1] < cy < f.bbox[3] for cx, cy in centres)
                elif name.startswith(("t1", "Tom")):
                    face = True
                else:
                    face = float(f.embedding @ her) >= backend.same_person_threshold
                rows.append(
                    {
                        "image": name,
                        "hog_score": round(f.score, 3),
                        "size": round(f.size),
                        "face": face,
                        "kept": f.ignored is None,
                        "checked": f.score < CHECK_BELOW,
                    }
                )
            checks.append(
                {
                    "image": name,
                    "boxes": len(boxes),
                    "detect_s": round(seconds, 3),
                    "checked": sum(f.score < CHECK_BELOW for f in boxes),
                }
            )
    faces = [r for r in rows if r["face"]]
    false = [r for r in rows if not r["face"]]
    print(
        json.dumps(
            {
                "boxes": len(rows),
                "faces": len(faces),
                "false_detections": len(false),
                "faces_kept": sum(r["kept"] for r in faces),
                "false_detections_kept": sum(r["kept"] for r in false),
                "weakest_face_hog": min(r["hog_score"] for r in faces),
                "strongest_false_hog": max((r["hog_score"] for r in false), default=None),
                "per_image": checks,
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
