"""portrait vs generate: seconds for one portrait from a 1200x900 template and for one plain image at the crop's
size with the same denoising steps, and the peak RSS of each, every mode in its own process. Prints JSON.

usage: python benchmarks/portrait.py [--model demo|sd15|PATH] [--steps 10] [--runs 2]
  sd15: a single-file checkpoint of SD1.5's shape with random weights (written once to a temp folder; about 2 GB).
Neither side loads a LoRA (the SD1.5-shaped model has none to fit); both score nothing extra but what they do in
the app: the portrait's time includes finding the template's face, colour matching, pasting and the likeness.
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_mode(mode: str, home: Path, model_spec: str, steps: int, strength: float, runs: int) -> dict:
    """Runs in a child process: load the pipeline, warm up, time `runs` images of one mode."""
    import dataclasses

    from easyphoto_app.demo_model import native_resolution
    from easyphoto_app.faces import get_backend
    from easyphoto_app.generate import generate
    from easyphoto_app.portrait import Plan, paint, place
    from easyphoto_app.settings import load_settings

    settings = load_settings(home)
    settings.app.model = model_spec
    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.workspace import Workspace

    ws = Workspace(home)
    loaded = PipelineCache().get(settings)
    size = native_resolution(loaded.model, 512)
    gen = dataclasses.replace(  # no LoRA and no identity adapter: the portrait's own cost
        settings.generate, prompt="easyphoto_face, portrait", seed=0, width=size, height=size, ip_scale=0
    )
    backend = get_backend("auto", home)
    template = home / "scene.jpg"

    def run_once(n_steps: int) -> float:
        start = time.perf_counter()
        if mode == "generate":  # plain text-to-image with the steps the portrait denoises
            generate(loaded, ws, dataclasses.replace(gen, num_inference_steps=max(1, int(n_steps * strength))))
        else:
            from easyphoto_app.faces.images import load_rgb

            cfg = dataclasses.replace(settings.portrait, strength=strength, num=1, seed=0)
            rgb = load_rgb(template, 4096)
            job = Plan(
                dataclasses.replace(gen, num_inference_steps=n_steps),
                cfg,
                "bench",
                template,
                gen.prompt,
                [],
                rgb,
                place(backend, rgb, cfg),
            )
            paint(loaded, ws, job)
        return time.perf_counter() - start

    run_once(
        max(2, round(2 / strength))
    )  # warm-up: first calls allocate, build the inpainting pipeline, load the face models
    times = [run_once(steps) for _ in range(runs)]
    out = {
        "mode": mode,
        "seconds": round(statistics.median(times), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "size": size,
        "denoising_steps": max(1, int(steps * strength)),
        "device": str(loaded.pipe.device),
    }
    import torch

    if torch.cuda.is_available():
        out["peak_vram_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        out["gpu"] = torch.cuda.get_device_name()
    return out


def set_up(home: Path, model: str) -> str:
    import photos

    photos.scene(home / "scene.jpg")
    faces = photos.astronaut_set(home.parent / "astro")
    (home / "settings.toml").write_text('[app]\nmodel = "demo"\n')
    run = [sys.executable, "-m", "easyphoto_app", "--data-dir", str(home)]
    subprocess.run([*run, "prepare", "--user", "bench", *map(str, faces)], check=True, cwd=ROOT, capture_output=True)
    if model != "sd15":
        return model
    from ldm_checkpoint import random_sd15

    return random_sd15(home)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--strengths", default="1.0,0.45", help="1.0 runs every step: the like-for-like comparison.")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "HOME", "MODEL"), help=argparse.SUPPRESS)
    ap.add_argument("--strength", type=float, default=1.0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        mode, home, model = a.child
        print(json.dumps(one_mode(mode, Path(home), model, a.steps, a.strength, a.runs)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "data"
        home.mkdir()
        model = set_up(home, a.model)
        rows = []
        for strength in map(float, a.strengths.split(",")):
            pair = {}
            for mode in ("generate", "portrait"):
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        mode,
                        str(home),
                        model,
                        "--steps",
                        str(a.steps),
                        "--runs",
                        str(a.runs),
                        "--strength",
                        str(strength),
                    ],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                )
                if out.returncode:
                    sys.exit(f"{mode} at strength {strength} failed:\n{out.stderr[-3000:]}")
                pair[mode] = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(
                {
                    "strength": strength,
                    **pair,
                    "time_ratio": round(pair["portrait"]["seconds"] / pair["generate"]["seconds"], 3),
                    "rss_ratio": round(pair["portrait"]["peak_rss_mb"] / pair["generate"]["peak_rss_mb"], 3),
                    **(
                        {
                            "vram_ratio": round(
                                pair["portrait"]["peak_vram_allocated_mb"] / pair["generate"]["peak_vram_allocated_mb"],
                                3,
                            )
                        }
                        if "peak_vram_allocated_mb" in pair["generate"]
                        else {}
                    ),
                }
            )
    print(
        json.dumps(
            {
                "benchmark": "portrait",
                "model": a.model,
                "template": "1200x900",
                "steps": a.steps,
                "targets": {"time_ratio": 1.3, "rss_ratio": 1.1},
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
