"""A long soak of generation: does memory creep on the cached pipeline? Prints JSON.

usage: python benchmarks/soak_generate.py [--images 200] [--every 10] [--steps 2] [--model tiny|demo]
A fresh data folder with one user (the astronaut's photo set, a face LoRA of a few steps and one RL epoch, through the
CLI), then, in this process as the UI runs it, `images` generations in a row on the one cached
pipeline (pipeline_cache.PipelineCache), both LoRAs stacked, their weights changed every `every` images (the UI's
sliders). Resident memory (psutil) after each block; the target:
after all of them within 10% of what it was after the first block.
--model tiny (default) is the tests' random tiny model, demo the built-in face model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cli(home: Path, *args: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "easyphoto_app", "--data-dir", str(home), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise SystemExit(f"{args[0]} failed:\n{r.stderr[-2000:]}")


def make_user(home: Path, model: str) -> None:
    import photos
    from tiny_model import build_random_model

    if model == "tiny":
        build_random_model(home / "models" / "demo")
    (home / "settings.toml").write_text('[app]\nmodel = "demo"\n')
    cli(home, "prepare", "--user", "astro", *map(str, photos.astronaut_set(home.parent / "photos")))
    cli(home, "train", "--user", "astro", "--max-train-steps", "4", "--checkpointing-steps", "2", "--rank", "4")
    cli(
        home,
        "rl",
        "--user",
        "astro",
        "--epochs",
        "1",
        "--samples-per-epoch",
        "2",
        "--sample-batch-size",
        "2",
        "--num-inference-steps",
        "3",
    )


def soak(home: Path, images: int, every: int, steps: int) -> dict:
    import psutil

    from easyphoto_app.generate import generate, with_overrides
    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    settings, ws, cache = load_settings(home), Workspace(home), PipelineCache()
    rss, t0 = [], time.perf_counter()
    for block in range(images // every):
        weights = (0.5 + 0.1 * (block % 6), 0.3 + 0.15 * (block % 5))
        cfg = with_overrides(
            settings.generate,
            num=every,
            num_inference_steps=steps,
            seed=block * every,
            lora_weight=weights[0],
            rl_weight=weights[1],
        )
        generate(cache.get(settings), ws, cfg, user="astro")
        rss.append(round(psutil.Process().memory_info().rss / 2**20, 1))
    growth = rss[-1] / rss[0] - 1
    return {
        "images": images,
        "weights_changed_every": every,
        "steps": steps,
        "rss_mb_after_each_block": rss,
        "rss_mb_first_block": rss[0],
        "rss_mb_last": rss[-1],
        "growth": round(growth, 4),
        "target": 0.10,
        "met": growth <= 0.10,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--model", choices=["tiny", "demo"], default="tiny")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        home = Path(tmp) / "data"
        make_user(home, args.model)
        print(json.dumps({"model": args.model, **soak(home, args.images, args.every, args.steps)}, indent=1))


if __name__ == "__main__":
    main()
