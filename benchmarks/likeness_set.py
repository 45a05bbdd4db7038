"""Likeness against one reference vs against the user's set of faces, on real photos. Prints JSON.

usage: python benchmarks/likeness_set.py [--photos DIR]
Each user's photos go through `prepare` (dlib) in a temporary data dir; then each probe image is scored twice: as
before (the cosine to the set's mean embedding, 1 = identical) and as now (faces.likeness: the best three cosines
to the accepted faces, 1 = as alike as the user's own photos). Probes: a copy of one of the user's photos, a photo
of them the set has not seen (held out), and strangers. Users: the astronaut (tests/photos.py astronaut_set), Tom
Hanks (distinct_looks of his photo), and with --photos (scripts/face_photos.py's folder) Obama and Jesper K.
Pedersen, whose three real photos give a real spread: two of them make the set, the third is held out.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def load(path: Path) -> np.ndarray:
    from easyphoto_app.faces.images import load_rgb

    return load_rgb(path)


def users(photo_dir: Path | None) -> dict[str, tuple[list[Path], dict[str, np.ndarray]]]:
    """name -> (the photos prepared, the probes by label)."""
    import photos

    tmp = Path(tempfile.mkdtemp(prefix="likeness-set-"))
    astro, hanks = photos.astronaut(), load(photos.insightface_image("Tom_Hanks_54745.png"))
    astro_set = photos.astronaut_set(tmp / "astro")
    hanks_looks = photos.distinct_looks(hanks)
    held_out = hanks_looks.pop("turn-0.16_mirror")
    (tmp / "hanks").mkdir()
    hanks_set = [photos.save(img, tmp / "hanks" / f"{k}.png") for k, img in hanks_looks.items()]
    found = {
        "astronaut": (
            astro_set,
            {
                "copy of a set photo": load(astro_set[0]),
                "held-out look": photos.distinct_looks(astro)["turn-0.16"],
                "stranger (Tom Hanks)": hanks,
            },
        ),
        "tom_hanks": (
            hanks_set,
            {"copy of a set photo": hanks, "held-out look": held_out, "stranger (astronaut)": astro},
        ),
    }
    if photo_dir:
        biden = load(photo_dir / "Joe_Biden" / "biden.jpg")
        for name, folder, files in (
            ("obama", "Barack_Obama", ["obama.jpg", "obama2.jpg", "obama3.jpg"]),
            ("jesper", "Jesper_K_Pedersen", ["jesper.jpg", "jesper_2.jpg", "new_wave_2.jpg"]),
        ):
            paths = [photo_dir / folder / f for f in files]
            found[name] = (
                paths[:2],
                {
                    "copy of a set photo": load(paths[0]),
                    "held-out photo": load(paths[2]),
                    "stranger (Joe Biden)": biden,
                },
            )
    return found


def measure(name: str, files: list[Path], probes: dict[str, np.ndarray]) -> dict:
    from easyphoto_app.faces.likeness import LikenessScorer, scorer_for
    from easyphoto_app.faces.prepare import load_reference, prepare
    from easyphoto_app.settings import FaceConfig
    from easyphoto_app.workspace import Workspace

    ws = Workspace(Path(tempfile.mkdtemp(prefix=f"likeness-{name}-")))
    record = prepare(ws, name, files, FaceConfig(backend="dlib"))
    now = scorer_for(ws, name)
    before = LikenessScorer(now.backend, load_reference(ws, name)["mean_embedding"])
    rows = {}
    for label, img in probes.items():
        old, new = before.score(img), now.score(img)
        rows[label] = {
            "before": old.likeness,
            "now": new.likeness,
            "cosine_before": old.cosine,
            "cosine_now": new.cosine,
        }
    return {"photos": len(files), "accepted": record.accepted_count, "scale": now.scale(), "probes": rows}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, default=None, help="scripts/face_photos.py's output folder")
    a = ap.parse_args()
    result = {name: measure(name, files, probes) for name, (files, probes) in users(a.photos).items()}
    print(json.dumps({"benchmark": "likeness_set", "backend": "dlib", "users": result}, indent=2))


if __name__ == "__main__":
    main()
