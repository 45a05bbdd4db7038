"""How much GPU memory a face LoRA's training needs, worked out before it starts (memory_trace.py says how).

Two moments are traced and the larger is the estimate:
- encoding the photos: every model on the GPU, the autoencoder in its safe dtype (fp32 for SDXL's when the run is in
  fp16), one photo at a time as on CUDA;
- a training step: the UNet (and the text encoders that train) with their LoRAs, gradient checkpointing as on CUDA,
  the LoRAs' gradients and AdamW's two moments in float32, the cached latents; the autoencoder and the frozen text
  encoders are back on the CPU by then.
Not counted: the text encoders' own activations when they train (77 tokens: tens of MB).
"""

from __future__ import annotations

import torch  # noqa: TID253 - loaded only in a job, to trace a model

from easyphoto_app.families import of_pipeline
from easyphoto_app.hub import human_size
from easyphoto_app.lora_adapters import TE_TARGETS, UNET_TARGETS, add_lora
from easyphoto_app.memory_trace import (
    GB,
    Estimate,
    added_conditions,
    cast,
    nbytes,
    preflight_warning,
    traced,
    vae_dtype,
)
from easyphoto_app.model_defaults import vae_scale

ENCODE_PHOTOS = 1  # photos encoded at once on CUDA (encode_faces with the autoencoder's slicing on)


def _lora_params(module, targets: list[str], rank: int) -> int:
    return sum(
        rank * (m.in_features + m.out_features)
        for name, m in module.named_modules()
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets
    )


def _encode_peak(vae_config: dict, resolution: int, dtype) -> tuple[int, int]:
    """(the autoencoder's bytes, the work of encoding) in the dtype it encodes in."""
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_config)
    dtype = vae_dtype(vae_config, dtype)
    cast(vae, dtype)
    with traced() as live, torch.no_grad():
        vae.encode(torch.empty(ENCODE_PHOTOS, 3, resolution, resolution, device="meta", dtype=dtype))
    return nbytes(vae.parameters()), live.peak


def _step_peak(unet_config: dict, cfg, latent: int, dtype, photos: int, text_lora_bytes: int) -> tuple[int, int]:
    """(the UNet's bytes with its LoRA, the work of one training step)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    cast(unet, dtype)
    unet.requires_grad_(False)
    lora = add_lora(
        unet, cfg.rank, cfg.lora_alpha, UNET_TARGETS, init=True
    )  # (meta tensors cannot be drawn "gaussian")
    unet.enable_gradient_checkpointing()
    unet.train()
    c, h = unet.config.in_channels, latent
    n, meta = cfg.train_batch_size, {"device": "meta", "dtype": dtype}
    with traced() as live:
        latents = torch.empty(2, 2 * photos, c, h, h, device="meta", dtype=torch.float32)  # mean and std of each view
        moments = [torch.empty_like(p) for p in lora for _ in range(2)]
        text_state = torch.empty(text_lora_bytes, dtype=torch.uint8, device="meta")  # their gradients and moments
        out = unet(
            torch.empty(n, c, h, h, **meta),
            torch.zeros(n, dtype=torch.long, device="meta"),
            torch.empty(n, 77, unet.config.cross_attention_dim, **meta),
            **added_conditions(unet.config, n, meta),
        ).sample
        out.float().mean().backward()
        del latents, moments, text_state, out
    return nbytes(unet.parameters()), live.peak


def estimate_train_memory(
    unet_config: dict,
    vae_config: dict,
    text_encoders: list,
    cfg,
    resolution: int,
    dtype=torch.bfloat16,
    photos: int = 20,
) -> Estimate:
    """`text_encoders`: the model's text encoders (real or on the meta device: only their shapes are read); `cfg` a
    TrainConfig (rank, lora_alpha, train_batch_size, train_text_encoder)."""
    text_bytes = sum(p.numel() for te in text_encoders for p in te.parameters()) * dtype.itemsize
    text_lora = sum(_lora_params(te, TE_TARGETS, cfg.rank) for te in text_encoders) * 4 if cfg.train_text_encoder else 0
    vae_bytes, encode_work = _encode_peak(vae_config, resolution, dtype)
    unet_bytes, step_work = _step_peak(
        unet_config, cfg, resolution // vae_scale(vae_config), dtype, photos, 3 * text_lora
    )
    encoding = Estimate((unet_bytes + vae_bytes + text_bytes) / GB, encode_work / GB)
    stepping = Estimate((unet_bytes + (text_bytes if cfg.train_text_encoder else 0) + text_lora) / GB, step_work / GB)
    return max(encoding, stepping, key=lambda e: e.total_gb)


def lower_settings(cfg) -> list[tuple[str, object]]:
    """Settings to try, in order, when the estimate does not fit (each keeps the earlier ones)."""
    out = [("train_batch_size", 1)] if cfg.train_batch_size > 1 else []
    if cfg.train_text_encoder:
        out.append(("train_text_encoder", False))
    return out


def preflight(pipe, cfg, resolution: int, free_bytes: int, dtype, photos: int) -> tuple[str, str | None]:
    """Called with the pipeline loaded on the GPU: the estimate as one line, and a warning with the lower settings to
    try if what the job adds to what is loaded does not fit in `free_bytes`."""
    encoders = [getattr(pipe, name) for name in of_pipeline(pipe).TEXT_ENCODERS]
    loaded = sum(nbytes(m.parameters()) for m in (pipe.unet, pipe.vae, *encoders))

    traced_once: dict[str, Estimate] = {}  # SDXL's take seconds each: the line and the warning share them

    def estimate(c) -> Estimate:
        if repr(c) not in traced_once:
            traced_once[repr(c)] = estimate_train_memory(
                dict(pipe.unet.config), dict(pipe.vae.config), encoders, c, resolution, dtype, photos
            )
        return traced_once[repr(c)]

    e = estimate(cfg)
    line = (
        f"GPU memory estimate for this training: about {human_size(int(e.total_gb * GB))} at its peak "
        f"({human_size(int(e.weights_gb * GB))} of weights), {human_size(free_bytes)} free after loading"
    )
    warning = preflight_warning(
        "training", lambda c: int(estimate(c).total_gb * GB) - loaded, cfg, lower_settings(cfg), free_bytes
    )
    return line, warning


def log_estimate(reporter, pipe, cfg, resolution: int, dtype, photos: int) -> None:
    """The estimate, and the warning if it does not fit, in the job's log (CUDA only: it reads the free memory)."""
    free, _ = torch.cuda.mem_get_info()
    try:
        line, warning = preflight(pipe, cfg, resolution, free, dtype, photos)
    except Exception as exc:  # noqa: BLE001 - an estimate must never stop a run
        line, warning = f"(no memory estimate: {type(exc).__name__}: {exc})", None
    for message in (line, warning):
        if message:
            reporter.log(message)
