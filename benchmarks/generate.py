"""Latency of the bare pipeline, with a user's two LoRAs stacked (unfused), and fused. Prints JSON.

usage: python benchmarks/generate.py --data-dir DIR --user ID [--model demo] [--steps 20] [--runs 5]
(DIR must hold loras/ID.safetensors and loras/ddpo_ID.safetensors: run prepare, train and rl first.)
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from easyphoto_app.device import pick_device  # noqa: E402
from easyphoto_app.generate import LoraChoice  # noqa: E402
from easyphoto_app.loaded_model import LoadedModel  # noqa: E402
from easyphoto_app.model_loading import load_pipeline, resolve_model
from easyphoto_app.workspace import Workspace  # noqa: E402


def timed(pipe, steps: int, runs: int) -> float:
    def once():
        pipe("easyphoto_face, portrait", num_inference_steps=steps, generator=torch.Generator().manual_seed(0))

    once()  # warm-up
    times = []
    for _ in range(runs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        once()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    ws = Workspace(Path(a.data_dir))
    device = pick_device("auto")
    model = resolve_model(a.model, ws.root, device)
    pipe = load_pipeline(model, device)
    bare = timed(pipe, a.steps, a.runs)
    loras = [LoraChoice(a.user, ws.face_lora(a.user), 1.0), LoraChoice(f"ddpo_{a.user}", ws.ddpo_lora(a.user), 1.0)]
    pipe.load_lora_weights(str(loras[0].path), adapter_name="face")
    pipe.load_lora_weights(str(loras[1].path), adapter_name="rl")
    pipe.set_adapters(["face", "rl"], adapter_weights=[1.0, 1.0])
    unfused = timed(pipe, a.steps, a.runs)
    pipe.unload_lora_weights()
    LoadedModel(pipe, model).use_loras(loras)  # the app fuses them
    fused = timed(pipe, a.steps, a.runs)
    print(
        json.dumps(
            {
                "benchmark": "generate",
                "model": a.model,
                "device": device,
                "steps": a.steps,
                "bare_s": round(bare, 4),
                "stacked_unfused_s": round(unfused, 4),
                "stacked_fused_s": round(fused, 4),
                "unfused_vs_bare": round(unfused / bare, 3),
                "fused_vs_bare": round(fused / bare, 3),
                "target_ratio": 1.03,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
