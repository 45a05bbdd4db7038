"""Does a portrait look like the user? Face fusion against the LoRAs alone, on people the face model never saw. JSON.

usage: python benchmarks/portrait_likeness.py [--people "Joe Biden,..."] [--strengths 0.3,0.45,0.6] [--seeds 2]
                                              [--train-steps 0] [--keep DIR]
For each held-out person of assets/face_model/sources.json: their photo set (tests/photos.py distinct_looks, as
likeness_chain.py), `prepare` and `train` through the CLI on the built-in face model, then portraits painted in this
process into real photos of other people (the other held-out people, Tom Hanks and two faces of insightface's
t1.jpg), at each strength, in three modes: no fusion (as before issue 39), fusion before painting only, and before
and after (the app's default weight). Per portrait: the dlib distance (raw descriptors; the same person is below
0.6) from its face to the person's original photo and to the template's own face; the seam score (the colour step
across the fusion mask's and the paste mask's edges over the template's own step there, the larger); whether every
pixel outside the painted square is the template's; and the seconds per portrait.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

SEED0 = 90_001


def modes(args) -> dict[str, tuple[bool, float]]:
    """No fusion, fusion before painting only, and before and after at each weight (the app's default first)."""
    from easyphoto_app.settings import PortraitConfig

    weights = dict.fromkeys([PortraitConfig().fusion_weight, *map(float, args.after_weights.split(","))])
    return {"none": (False, 0.0), "before": (True, 0.0), **{f"before_after {w:g}": (True, w) for w in weights}}


def templates(person: str, held: dict[str, Path]) -> list[tuple[str, Path, int]]:
    """(name, photo, face index) of real photos of other people than person."""
    import photos

    others = [(name, path, -1) for name, path in held.items() if name != person]
    t1 = photos.insightface_image("t1.jpg")
    return others + [
        ("Tom Hanks", photos.insightface_image("Tom_Hanks_54745.png"), -1),
        ("t1 face 2", t1, 2),
        ("t1 face 3", t1, 3),
    ]


def descriptor(backend, img: np.ndarray) -> np.ndarray | None:
    from build_face_model import raw_descriptor

    return raw_descriptor(backend, np.ascontiguousarray(img))


def distance(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    return None if a is None or b is None else round(float(np.linalg.norm(a - b)), 3)


def seam(portrait: np.ndarray, template: np.ndarray, spot, side: int) -> float:
    from easyphoto_app import fusion
    from easyphoto_app.portrait import feathered_mask, in_square

    x0, y0, _ = spot.box
    square = (slice(y0, y0 + side), slice(x0, x0 + side))
    masks = [feathered_mask(spot.face, spot.box, side), fusion.face_mask(in_square(spot, side), (side, side))]
    return round(
        max(fusion.edge_step(portrait[square], m) / max(fusion.edge_step(template[square], m), 1e-6) for m in masks), 3
    )


def paint_all(home: Path, user: str, person: str, original: np.ndarray, args) -> list[dict]:
    from easyphoto_app.faces import get_backend
    from easyphoto_app.faces.images import load_rgb
    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.portrait import paint, plan
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    settings, ws = load_settings(home), Workspace(home)
    loaded = PipelineCache().get(settings)
    backend = get_backend("dlib", home)
    gen = dataclasses.replace(settings.generate, seed=SEED0)
    rows = []
    for name, path, index in templates(person, held_out()):
        start = time.perf_counter()
        first = plan(ws, gen, dataclasses.replace(settings.portrait, face_index=index), user, path, backend)
        plan_s = time.perf_counter() - start  # reading the user's faces for fusion: counted in every portrait's time
        x0, y0, side = first.spot.box
        own = descriptor(backend, first.rgb[y0 : y0 + side, x0 : x0 + side])
        for strength in map(float, args.strengths.split(",")):
            for mode, (on, weight) in modes(args).items():
                cfg = dataclasses.replace(
                    first.cfg, strength=strength, num=args.seeds, seed=SEED0, fusion=on, fusion_weight=weight
                )
                result = paint(loaded, ws, dataclasses.replace(first, cfg=cfg))
                seconds = round((result.seconds + plan_s * on) / len(result.paths), 3)
                for out_path in result.paths:
                    rows.append(
                        score_one(backend, load_rgb(out_path, 4096), first, original, own)
                        | {
                            "template": name,
                            "strength": strength,
                            "mode": mode,
                            "seconds": seconds,
                            "notes": result.notes,
                        }
                    )
                    if args.keep:
                        keep = args.keep / person.replace(" ", "_") / f"{name.replace(' ', '_')}_{strength}_{mode}"
                        keep.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(out_path, keep / Path(out_path).name)
    return rows


def score_one(backend, out: np.ndarray, job, original: np.ndarray, own: np.ndarray | None) -> dict:
    """One portrait: its face's distances to the user and to the template's person, its seams, the rest kept."""
    x0, y0, side = job.spot.box
    rgb = job.rgb
    found = descriptor(backend, out[y0 : y0 + side, x0 : x0 + side])
    outside = np.ones(rgb.shape[:2], bool)
    outside[y0 : y0 + side, x0 : x0 + side] = False
    return {
        "to_user": distance(found, original),
        "to_template_person": distance(found, own),
        "template_to_user": distance(own, original),
        "seam": seam(out, rgb, job.spot, side),
        "outside_exact": bool(np.array_equal(out[outside], rgb[outside])),
    }


def summary(rows: list[dict]) -> dict:
    """Per strength and mode: the mean and the worst distance to the user, faces found, seams, exactness, time."""
    out = {}
    for key in sorted({(r["strength"], r["mode"]) for r in rows}):
        some = [r for r in rows if (r["strength"], r["mode"]) == key]
        found = [r["to_user"] for r in some if r["to_user"] is not None]
        away = [r["to_template_person"] for r in some if r["to_template_person"] is not None]
        out[f"{key[0]:g} {key[1]}"] = {
            "portraits": len(some),
            "faces_found": len(found),
            "mean_to_user": round(float(np.mean(found)), 3) if found else None,
            "max_to_user": max(found) if found else None,
            "below_0.6": sum(d < 0.6 for d in found),
            "min_to_template_person": min(away) if away else None,
            "mean_seam": round(float(np.mean([r["seam"] for r in some])), 3),
            "max_seam": max(r["seam"] for r in some),
            "outside_exact": all(r["outside_exact"] for r in some),
            "seconds": round(float(np.mean([r["seconds"] for r in some])), 3),
        }
    return out


def run_person(person: str, photo: Path, args, work: Path) -> dict:
    from likeness_chain import cli, original_descriptor, photo_set

    home = work / person.replace(" ", "_")
    home.mkdir(parents=True)
    (home / "settings.toml").write_text('[app]\nmodel = "demo"\n')
    files = photo_set(person, photo, work / "photos" / home.name)
    cli(home, "prepare", "--user", "heldout", *map(str, files))
    steps = ["--max-train-steps", str(args.train_steps)] if args.train_steps else []
    _, train_s = cli(home, "train", "--user", "heldout", *steps)
    rows = paint_all(home, "heldout", person, original_descriptor(photo), args)
    templates_to_user = {r["template"]: r["template_to_user"] for r in rows}
    return {
        "person": person,
        "photos_made": len(files),
        "train_s": round(train_s, 1),
        "template_to_user": templates_to_user,
        "summary": summary(rows),
        "portraits": rows,
    }


def held_out() -> dict[str, Path]:
    import build_face_model

    return build_face_model.held_out_photos()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", default="", help="comma-separated held-out names (default: all of sources.json)")
    ap.add_argument("--strengths", default="0.3,0.45,0.6")
    ap.add_argument("--seeds", type=int, default=2, help="portraits per template, strength and mode")
    ap.add_argument("--after-weights", default="1.0", help="fusion weights after painting, besides the default")
    ap.add_argument("--train-steps", type=int, default=0, help="0: the app's default")
    ap.add_argument("--keep", type=Path, default=None, help="a folder to copy the portraits into")
    args = ap.parse_args()
    photos = held_out()
    names = [n.strip() for n in args.people.split(",") if n.strip()] or list(photos)
    work = Path(tempfile.mkdtemp(prefix="portrait-likeness-"))
    try:
        people = [run_person(n, photos[n], args, work) for n in names]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from easyphoto_app.settings import PortraitConfig

    print(
        json.dumps(
            {
                "strengths": args.strengths,
                "seeds": args.seeds,
                "default_strength": PortraitConfig().strength,
                "fusion_weight": PortraitConfig().fusion_weight,
                "targets": {
                    "with_fusion_mean_to_user": 0.5,
                    "every_portrait_to_user": 0.6,
                    "min_to_template_person": 0.6,
                    "seam": 1.5,
                },
                "people": people,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
