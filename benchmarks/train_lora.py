"""Face-LoRA training speed and memory: our trainer vs a plain diffusers + peft loop (the
diffusers LoRA example's approach: VAE encode and text encode on every step), same model,
batch, resolution, rank and precision. Prints JSON.
usage: python benchmarks/train_lora.py [--model demo|sd15|PATH] [--steps 20] [--precision auto|fp32|fp16|bf16]
  sd15: a single-file checkpoint of SD1.5's shape with random weights (written to a temp folder; about 2 GB), 512 px.
In half precision the plain loop does what diffusers' LoRA example does: frozen weights in that dtype, LoRA weights
in float32, autocast, and a gradient scaler for fp16.
"""

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]

import photos  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from easyphoto_app.faces.prepare import prepare  # noqa: E402
from easyphoto_app.jobs import Reporter  # noqa: E402
from easyphoto_app.lora_adapters import UNET_TARGETS, add_lora  # noqa: E402
from easyphoto_app.lora_train import FaceLoraTrainer  # noqa: E402
from easyphoto_app.settings import TRIGGER, FaceConfig, load_settings  # noqa: E402
from easyphoto_app.workspace import Workspace  # noqa: E402


class Peak:
    def __init__(self):
        self.proc, self.peak, self.stop = psutil.Process(), 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.01)

    def reset(self):
        self.peak = self.proc.memory_info().rss
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def report(self):
        out = {"peak_rss_mb": round(self.peak / 2**20, 1)}
        if torch.cuda.is_available():
            out["peak_vram_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            out["peak_vram_reserved_mb"] = round(torch.cuda.max_memory_reserved() / 2**20, 1)
        return out


def plain_loop(t: FaceLoraTrainer, steps: int) -> float:
    """The straightforward loop: no caches, VAE and text encoder stay on the device."""
    import numpy as np
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from PIL import Image

    pipe = t.pipe
    pipe.vae.to(t.device)
    pipe.text_encoder.to(t.device)
    unet = pipe.unet
    if "plain" not in unet.peft_config:
        unet.delete_adapters(["face"])
        add_lora(unet, t.cfg.rank, t.cfg.lora_alpha, UNET_TARGETS, adapter="plain")
    params = [p for n, p in unet.named_parameters() if ".plain." in n]  # float32 already: add_lora casts them
    opt = torch.optim.AdamW(params, lr=t.cfg.learning_rate, weight_decay=1e-2)
    scaler = t.precision.scaler()
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    images = [
        np.asarray(Image.open(p).convert("RGB").resize((t.resolution,) * 2), np.float32) / 127.5 - 1 for p in t.images
    ]
    start = time.perf_counter()
    for step in range(steps * t.cfg.gradient_accumulation_steps):
        px = torch.from_numpy(images[step % len(images)]).permute(2, 0, 1)[None].to(t.device, pipe.vae.dtype)
        with t.precision.autocast():
            latents = pipe.vae.encode(px).latent_dist.sample() * pipe.vae.config.scaling_factor
            ids = pipe.tokenizer(
                TRIGGER, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
            ).input_ids
            text = pipe.text_encoder(ids.to(t.device))[0]
            noise = torch.randn_like(latents)
            ts = torch.randint(0, 1000, (1,), device=t.device)
            pred = unet(sched.add_noise(latents, noise, ts), ts, text).sample
        loss = F.mse_loss(pred.float(), noise.float()) / t.cfg.gradient_accumulation_steps
        scaler.scale(loss).backward()
        if (step + 1) % t.cfg.gradient_accumulation_steps == 0:
            scaler.step(opt)
            scaler.update()
            opt.zero_grad()
    return (time.perf_counter() - start) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="demo")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    try:
        ws = Workspace(tmp / "data")
        prepare(ws, "bench", photos.astronaut_set(tmp / "photos"), FaceConfig(backend="offline"))
        s = load_settings(ws.root)
        if a.model == "sd15":
            from ldm_checkpoint import random_sd15

            a.model = random_sd15(tmp)
        s.app.model, s.app.precision, s.train.rank = a.model, a.precision, a.rank
        peak = Peak()
        t = FaceLoraTrainer(s, ws, "bench", Reporter())
        t.setup()
        t.train_step()  # warm-up
        peak.reset()
        start = time.perf_counter()
        for _ in range(a.steps):
            t.train_step()
        ours = {"s_per_step": round((time.perf_counter() - start) / a.steps, 4), **peak.report()}
        plain_loop(t, 1)  # warm-up
        peak.reset()
        plain = {"s_per_step": round(plain_loop(t, a.steps), 4), **peak.report()}
        peak.stop.set()
        print(
            json.dumps(
                {
                    "benchmark": "train_lora",
                    "model": a.model,
                    "device": t.device,
                    "gpu": torch.cuda.get_device_name() if t.device == "cuda" else None,
                    "precision": t.precision.name,
                    "resolution": t.resolution,
                    "rank": a.rank,
                    "grad_accum": t.cfg.gradient_accumulation_steps,
                    "batch": t.cfg.train_batch_size,
                    "steps": a.steps,
                    "ours": ours,
                    "plain_diffusers_peft": plain,
                    "time_ratio": round(ours["s_per_step"] / plain["s_per_step"], 3),
                    "target_time_ratio": 0.8,
                },
                indent=2,
            )
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
