"""Does fp16 overflow in RL on random weights of SD 1.5's UNet? Prints JSON.

The UNet is SD 1.5's (assets/sd15/unet config, 860M parameters) with diffusers' random initialisation, held in fp16
with the app's rank-4 RL LoRA in fp32, as `rl --precision fp16` holds it. It samples with the app's own sampler and
takes PPO steps with its own update and gradient scaler, on random prompt embeddings and random advantages (every
sample differs, as a reward that sees faces gives). Per UNet block: the largest |activation| seen and whether any was
inf (fp16's largest finite value is 65504); then the updates the scaler skipped, the share of exactly-zero LoRA-B
gradients and the scale. Small latents (--size 64 px: 8x8) keep it to minutes on a CPU; on a GPU use --size 512.

usage: python benchmarks/fp16_overflow.py [--size 64] [--steps 4] [--samples 2] [--precision fp16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--precision", default="fp16")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import torch
    from diffusers import DDIMScheduler, UNet2DConditionModel

    from easyphoto_app.ddpo.ppo import add_rl_lora, ppo_update
    from easyphoto_app.ddpo.sampling import sample
    from easyphoto_app.families.conditioning import Cond
    from easyphoto_app.families.sd15 import CONFIG as SD15
    from easyphoto_app.precision import pick_precision
    from easyphoto_app.settings import RLConfig

    torch.manual_seed(0)
    precision = pick_precision(a.precision, a.device)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15 / "unet"))
    unet.requires_grad_(False)
    unet.to(a.device, precision.dtype)
    params = add_rl_lora(unet, 4)
    scheduler = DDIMScheduler.from_pretrained(SD15 / "scheduler")
    peaks: dict[str, list] = {}

    def watch(name):
        def hook(_module, _inputs, output):
            out = output[0] if isinstance(output, tuple) else output
            out = getattr(out, "sample", out)
            out = out.detach()
            finite = out[torch.isfinite(out)]
            row = peaks.setdefault(name, [0.0, False])
            row[0] = max(row[0], float(finite.abs().max()) if finite.numel() else 0.0)
            row[1] = row[1] or bool((~torch.isfinite(out)).any())

        return hook

    blocks = [(f"down{i}", b) for i, b in enumerate(unet.down_blocks)] + [("mid", unet.mid_block)]
    blocks += [(f"up{i}", b) for i, b in enumerate(unet.up_blocks)] + [("conv_out", unet.conv_out)]
    for name, block in blocks:
        block.register_forward_hook(watch(name))
    g = torch.Generator("cpu").manual_seed(0)
    cond = Cond(torch.randn(a.samples, 77, 768, generator=g).to(a.device, precision.dtype))
    uncond = Cond(torch.randn(1, 77, 768, generator=g).to(a.device, precision.dtype))
    cfg = replace(RLConfig(), num_inference_steps=a.steps, train_batch_size=1, timestep_batch=a.steps)
    t0 = time.perf_counter()
    traj = sample(
        unet,
        scheduler,
        cond,
        uncond,
        [""] * a.samples,
        a.steps,
        cfg.guidance_scale,
        cfg.eta,
        (4, a.size // 8, a.size // 8),
        g,
        precision,
    )
    sample_s = time.perf_counter() - t0
    sampling_peaks = {k: {"max_abs": round(v[0], 2), "inf": v[1]} for k, v in peaks.items()}
    peaks.clear()
    scaler = precision.scaler()
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate)
    advantages = torch.randn(a.samples, generator=g)
    t0 = time.perf_counter()
    stats = ppo_update(
        unet, scheduler, traj, advantages, uncond, optimizer, params, cfg, g, precision=precision, scaler=scaler
    )
    print(
        json.dumps(
            {
                "unet": "SD 1.5 config, random init",
                "precision": precision.name,
                "device": a.device,
                "size": a.size,
                "steps": a.steps,
                "samples": a.samples,
                "sample_s": round(sample_s, 1),
                "train_s": round(time.perf_counter() - t0, 1),
                "latents_finite": bool(torch.isfinite(traj.latents).all()),
                "logprob_finite": bool(torch.isfinite(traj.log_probs).all()),
                "sampling_peaks": sampling_peaks,
                "training_peaks": {k: {"max_abs": round(v[0], 2), "inf": v[1]} for k, v in peaks.items()},
                "updates": stats["updates"],
                "skipped_updates": stats["skipped_updates"],
                "grad_zero_frac": stats["grad_zero_frac"],
                "ratio_one_frac": stats["ratio_one_frac"],
                "grad_scale_after": float(scaler.get_scale()),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
