"""Time to a first portrait, as a newcomer meets it offline. Prints JSON.

usage: python benchmarks/first_run.py [--person NAME] [--images 4]
A fresh data folder, no settings file and no --model, the Hub out of reach (HF_HUB_OFFLINE=1), so the default SD 1.5
is not downloaded and the app falls back to its built-in face model, as it does on a first offline start. Through the
CLI, as the UI's jobs run it: `prepare` on a held-out person's photo set (as benchmarks/likeness_chain.py makes it),
`train` with no flag (what Start training with nothing changed now hands over), then `generate` one image at a time
on new seeds until one has a face that the app's own detector finds (at most --images). Reported: the seconds of each
stage, the settings the job said it ran (its log line), whether each image has a face, and the seconds from the
start of training to the first image with a face (target: 300 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts"), str(ROOT / "benchmarks")]

from likeness_chain import SEED0, cli, held_out, photo_set  # noqa: E402  (the path above first)

TARGET_S = 300


def first_run(person: str, photo: Path, images: int, work: Path) -> dict:
    from PIL import Image

    from easyphoto_app.faces.likeness import scorer_for
    from easyphoto_app.workspace import Workspace

    home = work / "data"
    files = photo_set(person, photo, work / "photos")
    _, prepare_s = cli(home, "prepare", "--user", "newcomer", *map(str, files))
    events = work / "train.jsonl"
    _, train_s = cli(home, "train", "--user", "newcomer", "--events", str(events))
    said = next(
        e
        for e in map(json.loads, events.read_text().splitlines())
        if e["type"] == "log" and e["message"].startswith("Training a face LoRA")
    )
    scorer = scorer_for(Workspace(home), "newcomer")
    shots, to_face = [], None
    for i in range(images):
        out, seconds = cli(home, "generate", "--user", "newcomer", "--num", "1", "--seed", str(SEED0 + i), "--json")
        score = scorer.score(Image.open(json.loads(out)["paths"][0]))
        shots.append(
            {
                "seed": SEED0 + i,
                "seconds": round(seconds, 1),
                "face": score.likeness is not None,
                "likeness": score.likeness,
            }
        )
        if score.likeness is not None:
            to_face = round(train_s + sum(s["seconds"] for s in shots), 1)
            break
    return {
        "person": person,
        "photos": len(files),
        "prepare_s": round(prepare_s, 1),
        "train_s": round(train_s, 1),
        "train_settings": {k: said["settings"][k] for k in ("rank", "lora_alpha", "learning_rate")},
        "train_steps": said["steps"],
        "first_image_s": shots[0]["seconds"],
        "first_image_has_face": shots[0]["face"],
        "images": shots,
        "start_training_to_first_face_s": to_face,
        "target_s": TARGET_S,
        "met": to_face is not None and to_face <= TARGET_S,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--person", default="", help="a held-out person of assets/face_model/sources.json (default: the first)"
    )
    ap.add_argument("--images", type=int, default=4, help="at most this many images to find one with a face")
    args = ap.parse_args()
    photos = held_out()
    person = args.person or next(iter(photos))
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        print(json.dumps(first_run(person, photos[person], args.images, Path(tmp)), indent=1))


if __name__ == "__main__":
    main()
