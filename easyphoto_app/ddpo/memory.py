"""How much GPU memory an RL run needs, worked out before it starts, without a GPU (memory_trace.py says how).

One epoch's work is traced: the trajectory buffer, a guided sampling step, the VAE decode and a training step
(forward and backward, with gradient checkpointing as on CUDA).
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from easyphoto_app.ddpo.ppo import add_rl_lora
from easyphoto_app.ddpo.sampling import drop_vae_encoder
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


def _meta_models(unet_config: dict, vae_config: dict, rank: int, dtype):
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
    drop_vae_encoder(vae)
    cast(unet, dtype)
    cast(vae, vae_dtype(vae_config, dtype))
    unet.requires_grad_(False)
    return unet, vae, add_rl_lora(unet, rank, init=True)  # (meta tensors cannot be initialised "gaussian")


def estimate_rl_memory(
    unet_config: dict,
    vae_config: dict,
    cfg,
    resolution: int,
    dtype=torch.float16,
    cuda_savings: bool = True,
) -> Estimate:
    """`cfg` is an RLConfig (samples_per_epoch, sample_batch_size, train_batch_size, timestep_batch,
    num_inference_steps, rank).
    `cuda_savings`: gradient checkpointing, as the run does on CUDA (it decodes one image at a time everywhere).
    The weights are those an epoch holds: the UNet with the RL LoRA and the VAE's decoder."""
    unet, vae, lora = _meta_models(unet_config, vae_config, cfg.rank, dtype)
    if cuda_savings:
        unet.enable_gradient_checkpointing()
    c, h = unet.config.in_channels, resolution // vae_scale(vae.config)
    ctx_len, ctx_dim = 77, unet.config.cross_attention_dim
    meta = {"device": "meta", "dtype": dtype}
    with traced() as live:
        # kept for the whole epoch, in float32 whatever the weights (DDPO's step maths needs it)
        trajectory = torch.empty(
            cfg.samples_per_epoch, cfg.num_inference_steps + 1, c, h, h, device="meta", dtype=torch.float32
        )
        cond = torch.empty(cfg.samples_per_epoch, ctx_len, ctx_dim, **meta)
        state = [torch.empty_like(p) for p in lora for _ in range(3)]  # grad + AdamW's two moments
        with torch.no_grad():
            b = cfg.sample_batch_size
            unet(
                torch.empty(2 * b, c, h, h, **meta),
                torch.tensor(999),
                torch.empty(2 * b, ctx_len, ctx_dim, **meta),
                **added_conditions(unet.config, 2 * b, meta),
            )
            vae.decode(
                torch.empty(1, vae.config.latent_channels, h, h, device="meta", dtype=vae.dtype)
            )  # sampling.decode
        unet.train()
        n = 2 * cfg.train_batch_size * max(1, cfg.timestep_batch)
        out = unet(
            torch.empty(n, c, h, h, **meta),
            torch.zeros(n, dtype=torch.long, device="meta"),
            torch.empty(n, ctx_len, ctx_dim, **meta),
            **added_conditions(unet.config, n, meta),
        ).sample
        out.float().mean().backward()
        del trajectory, cond, state, out
    weights = nbytes(unet.parameters()) + nbytes(vae.parameters())  # the text encoders are freed before an epoch
    return Estimate(weights / GB, live.peak / GB)


def lower_settings(cfg) -> list[tuple[str, object]]:
    """Settings to try, in order, when the estimate does not fit (each keeps the earlier ones)."""
    out = []
    if cfg.timestep_batch > 1:
        out.append(("timestep_batch", 1))
    if cfg.sample_batch_size > 1:
        out.append(("sample_batch_size", 1))
    if cfg.samples_per_epoch > 4:
        out.append(("samples_per_epoch", 4))
    return out


def preflight(
    unet_config: dict, vae_config: dict, cfg, resolution: int, free_bytes: int, dtype=torch.float16
) -> str | None:
    """None if the run's work fits in `free_bytes`; else one warning with the lower settings to try."""

    def work_bytes(c) -> int:
        return int(estimate_rl_memory(unet_config, vae_config, c, resolution, dtype).work_gb * GB)

    return preflight_warning("RL", work_bytes, cfg, lower_settings(cfg), free_bytes)
