"""Is learning seen? The app's own prepare -> train -> rl -> generate on people the face model never saw. Prints JSON.

usage: python benchmarks/likeness_chain.py [--people "Joe Biden,..."] [--rl-minutes 20] [--precisions fp32,fp16,bf16]
                                           [--train-steps 0] [--seeds 16] [--keep DIR]
For each held-out person of assets/face_model/sources.json: a photo set made from their photo (tests/photos.py
distinct_looks: turns and mirrors, which the app keeps as distinct photos), then, through the CLI in a fresh data
dir on the built-in demo model (the face model): `prepare`, `generate` on 16 fixed seeds with no LoRA (base),
`train` with the defaults, `generate` with the face LoRA, and for each precision `rl` with a time budget and
`generate` with both LoRAs. Each image set is scored by the app's likeness (dlib, against the prepared set's
identity; 0 when no face is found) and by the dlib distance to the original photo (the photo itself, not a
look made of it). The RL gain is paired by seed, with a bootstrap 95% interval. --keep DIR keeps the images;
--grid PNG draws, per person, the same seeds side by side: base, face LoRA, and face + RL for each precision, each
image captioned with its likeness.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

SEED0 = 70_001  # never a training, validation or RL seed


def cli(home: Path, *args: str, precision: str | None = None) -> tuple[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "easyphoto_app",
        "--data-dir",
        str(home),
        *(["--precision", precision] if precision else []),
        *args,
    ]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if r.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stdout, time.perf_counter() - t0


def photo_set(name: str, photo: Path, folder: Path) -> list[Path]:
    import photos

    from easyphoto_app.faces.images import load_rgb

    folder.mkdir(parents=True, exist_ok=True)
    looks = photos.distinct_looks(load_rgb(photo, 1024))
    return [
        photos.save(img, folder / f"{name.replace(' ', '_')}_{look}.jpg", quality=92) for look, img in looks.items()
    ]


def generate(home: Path, *extra: str, seeds: int) -> tuple[list[Path], float]:
    out, seconds = cli(home, "generate", "--num", str(seeds), "--seed", str(SEED0), "--json", *extra)
    return [Path(p) for p in json.loads(out)["paths"]], seconds


def score(home: Path, user: str, images: list[Path], original: np.ndarray) -> dict:
    from build_face_model import raw_descriptor

    from easyphoto_app.faces.images import load_rgb
    from easyphoto_app.faces.likeness import scorer_for
    from easyphoto_app.workspace import Workspace

    scorer = scorer_for(Workspace(home), user)
    likeness, distance = [], []
    for path in images:
        img = _big(load_rgb(path))
        s = scorer.score(img)
        likeness.append(0.0 if s.likeness is None else s.likeness)
        found = None if s.likeness is None else raw_descriptor(scorer.backend, img)
        distance.append(None if found is None else round(float(np.linalg.norm(found - original)), 3))
    found = [d for d in distance if d is not None]
    return {
        "face_rate": round(len(found) / len(images), 3),
        "likeness": [round(v, 3) for v in likeness],
        "mean_likeness": round(float(np.mean(likeness)), 3),
        "mean_distance_to_photo": None if not found else round(float(np.mean(found)), 3),
    }


def _big(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.resize(img, (512, 512), interpolation=cv2.INTER_CUBIC) if max(img.shape[:2]) < 512 else img


def original_descriptor(photo: Path) -> np.ndarray:
    from build_face_model import raw_descriptor

    from easyphoto_app.faces.dlib_backend import DlibBackend
    from easyphoto_app.faces.images import load_rgb

    return raw_descriptor(DlibBackend(), load_rgb(photo, 2048))


def bootstrap_gain(a: list[float], b: list[float], n: int = 10_000) -> dict:
    diff = np.asarray(b) - np.asarray(a)
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), (n, len(diff)))].mean(1)
    return {
        "gain": round(float(diff.mean()), 3),
        "ci95": [round(float(np.percentile(means, q)), 3) for q in (2.5, 97.5)],
    }


def run_person(name: str, photo: Path, args, work: Path) -> dict:
    home = work / name.replace(" ", "_")
    (home).mkdir(parents=True)
    (home / "settings.toml").write_text('[app]\nmodel = "demo"\n')
    user = "heldout"
    files = photo_set(name, photo, work / "photos" / home.name)
    original = original_descriptor(photo)
    row: dict = {"person": name, "photos_made": len(files)}
    _, row["prepare_s"] = cli(home, "prepare", "--user", user, *map(str, files))
    from easyphoto_app.faces.prepare import load_record
    from easyphoto_app.workspace import Workspace

    row["photos_kept"] = sum(p["accepted"] for p in load_record(Workspace(home), user)["photos"])
    images, row["base_generate_s"] = generate(home, seeds=args.seeds)
    row["base"] = score(home, user, images, original)
    rows = [("base", images, row["base"]["likeness"])]
    train = ["--max-train-steps", str(args.train_steps)] if args.train_steps else []
    _, row["train_s"] = cli(home, "train", "--user", user, *train)
    images, _ = generate(home, "--user", user, "--no-rl", seeds=args.seeds)
    row["face_lora"] = score(home, user, images, original)
    rows.append(("face LoRA", images, row["face_lora"]["likeness"]))
    row["rl"] = {}
    for precision in args.precisions.split(","):
        shutil.rmtree(home / "users" / user / "ddpo_weights", ignore_errors=True)
        for f in (home / "users" / user).glob("ddpo_*.safetensors"):
            f.unlink()
        _, seconds = cli(home, "rl", "--user", user, "--max-hours", str(args.rl_minutes / 60), precision=precision)
        images, _ = generate(home, "--user", user, seeds=args.seeds)
        scored = score(home, user, images, original)
        row["rl"][precision] = {
            "rl_s": round(seconds, 1),
            **scored,
            **bootstrap_gain(row["face_lora"]["likeness"], scored["likeness"]),
        }
        rows.append((f"face + RL ({precision})", images, scored["likeness"]))
    for label, images, _ in rows if args.keep else []:
        _keep(args.keep, home.name, label.replace(" ", "_").replace("(", "").replace(")", ""), images)
    if args.grid:
        _grid(rows, name, args.grid.with_name(f"{args.grid.stem}_{home.name}{args.grid.suffix}"))
    return row


def _grid(rows: list[tuple[str, list[Path], list[float]]], person: str, path: Path, tile: int = 128) -> None:
    """One row per stage, one column per seed (the same seeds in every row), the likeness under each image."""
    from PIL import Image, ImageDraw

    label_w, caption_h, cols = 150, 16, len(rows[0][1])
    sheet = Image.new("RGB", (label_w + cols * tile, 24 + len(rows) * (tile + caption_h)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (4, 4),
        f"{person} (held out of the face model): the same {cols} seeds in every row; likeness under each",
        fill="black",
    )
    for r, (label, images, likeness) in enumerate(rows):
        y = 24 + r * (tile + caption_h)
        draw.text((4, y + tile // 2), f"{label}\nmean {sum(likeness) / len(likeness):.3f}", fill="black")
        for c, (image, value) in enumerate(zip(images, likeness)):
            sheet.paste(Image.open(image).convert("RGB").resize((tile, tile)), (label_w + c * tile, y))
            draw.text((label_w + c * tile + 4, y + tile + 2), f"{value:.2f}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def _keep(keep: Path, person: str, tag: str, images: list[Path]) -> None:
    folder = keep / person / tag
    folder.mkdir(parents=True, exist_ok=True)
    for p in images:
        shutil.copy2(p, folder / p.name)


def held_out() -> dict[str, Path]:
    import build_face_model

    return build_face_model.held_out_photos()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", default="", help="comma-separated held-out names (default: all of sources.json)")
    ap.add_argument("--rl-minutes", type=float, default=20.0)
    ap.add_argument("--precisions", default="fp32,fp16,bf16")
    ap.add_argument("--train-steps", type=int, default=0, help="0: the app's default")
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--grid", type=Path, default=None, help="a PNG path; one file per person (the name added)")
    args = ap.parse_args()
    photos = held_out()
    names = [n.strip() for n in args.people.split(",") if n.strip()] or list(photos)
    work = Path(tempfile.mkdtemp(prefix="likeness-chain-"))
    try:
        rows = [run_person(n, photos[n], args, work) for n in names]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"seeds": args.seeds, "rl_minutes": args.rl_minutes, "people": rows}, indent=1))


if __name__ == "__main__":
    main()
