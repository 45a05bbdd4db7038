"""GPU memory estimates for SDXL base 1.0 (its shape from assets/sdxl, built on PyTorch's meta device): the face
LoRA at 1024 px and RL at 1024, 768 and 512 px, with the app's defaults and with the settings its preflight lowers
first. Estimates, not measurements: no GPU is used (easyphoto_app/memory_trace.py says what is and is not counted;
the CUDA context, roughly 0.3-0.5 GB, is not). Prints JSON.

    .venv/bin/python benchmarks/sdxl_memory.py [--resolutions 1024,768,512]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from easyphoto_app.families import sdxl  # noqa: E402
from easyphoto_app.memory_trace import GB  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def configs() -> tuple[dict, dict, list]:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    folder = sdxl.CONFIG
    unet = dict(UNet2DConditionModel.load_config(folder / "unet"))
    vae = dict(AutoencoderKL.load_config(folder / "vae"))
    with torch.device("meta"):  # shapes only
        encoders = [
            CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
            CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(folder / "text_encoder_2")),
        ]
    return unet, vae, encoders


def rounded(e, seconds: float) -> dict:
    return {
        "weights_gb": round(e.weights_gb, 2),
        "work_gb": round(e.work_gb, 2),
        "total_gb": round(e.total_gb, 2),
        "estimate_s": round(seconds, 1),
    }


def timed(fn, *args, **kwargs) -> dict:
    start = time.perf_counter()
    e = fn(*args, **kwargs)
    return rounded(e, time.perf_counter() - start)


def training(unet, vae, encoders) -> dict:
    from easyphoto_app.settings import TrainConfig
    from easyphoto_app.train_memory import estimate_train_memory

    own = {k: v for k, v in sdxl.DEFAULTS["train"].items() if k in ("rank", "lora_alpha", "learning_rate")}
    cfg = TrainConfig(**own)
    out = {"settings": {k: getattr(cfg, k) for k in ("rank", "lora_alpha", "train_batch_size")}}
    for name, dtype in DTYPES.items():
        for te in (False, True):
            c = dataclasses.replace(cfg, train_text_encoder=te)
            out[f"{name}_text_encoders_{'trained' if te else 'frozen'}"] = timed(
                estimate_train_memory, unet, vae, encoders, c, 1024, dtype, 20
            )
    return out


def rl(unet, vae, encoders, resolutions: list[int]) -> dict:
    from diffusers import AutoencoderKL

    from easyphoto_app.ddpo.memory import estimate_rl_memory, lower_settings
    from easyphoto_app.memory_trace import vae_dtype
    from easyphoto_app.settings import RLConfig

    text_bytes = sum(p.numel() for te in encoders for p in te.parameters()) * 2
    with torch.device("meta"):
        full_vae = AutoencoderKL.from_config(vae)
    width = torch.finfo(vae_dtype(vae, torch.float16)).bits // 8  # SDXL's autoencoder runs in fp32 (force_upcast)
    vae_encoder_bytes = sum(p.numel() for m in (full_vae.encoder, full_vae.quant_conv) for p in m.parameters()) * width
    cfg = RLConfig()
    lowered = cfg
    for name, value in lower_settings(cfg):
        lowered = dataclasses.replace(lowered, **{name: value})
    out = {
        "settings": {
            k: getattr(cfg, k)
            for k in (
                "sample_batch_size",
                "train_batch_size",
                "timestep_batch",
                "samples_per_epoch",
                "num_inference_steps",
                "rank",
            )
        },
        "lowered": {k: getattr(lowered, k) for k in ("sample_batch_size", "timestep_batch", "samples_per_epoch")},
    }
    for res in resolutions:
        for label, c in (("default", cfg), ("lowered", lowered)):
            # RL frees the text encoders and the VAE's encoder once the prompts are embedded: loading, not an epoch
            e = out[f"fp16_{res}px_{label}"] = timed(estimate_rl_memory, unet, vae, c, res, torch.float16)
            e["freed_after_embedding_gb"] = round((text_bytes + vae_encoder_bytes) / GB, 2)
            e["peak_gb"] = round(max(e["total_gb"], e["weights_gb"] + e["freed_after_embedding_gb"]), 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--resolutions", default="1024,768,512", help="RL's resolutions")
    args = ap.parse_args()
    unet, vae, encoders = configs()
    result = {
        "model": "SDXL base 1.0's shape (assets/sdxl), meta device: estimates, no GPU",
        "face_lora_1024px": training(unet, vae, encoders),
        "rl": rl(unet, vae, encoders, [int(r) for r in args.resolutions.split(",")]),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
