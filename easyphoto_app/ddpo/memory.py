"""How much GPU memory an RL run needs, worked out before it starts, without a GPU.

The UNet and VAE are built on PyTorch's meta device (shapes, no data, no compute) and one epoch's work is
traced: the trajectory buffer, a guided sampling step, the VAE decode and a training step (forward and
backward, with gradient checkpointing as on CUDA). The peak of live tensor bytes is the estimate.
Attention is counted as the fused GPU kernels hold it (output and log-sum-exp, no score matrix).
Not counted: the CUDA context, allocator slack and kernel workspaces. This is why the check compares the
activations with the memory that is free after the pipeline has loaded, not with the card's size.
"""

from __future__ import annotations

import dataclasses
import weakref
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

GB = 1024**3


class _LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages alive at once, counting each storage once until it is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage._cdata not in self._seen:
                    self._seen.add(storage._cdata)
                    self.live += storage.nbytes()
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(storage, self._free, storage._cdata, storage.nbytes())
        return out

    def _free(self, key: int, nbytes: int) -> None:
        self._seen.discard(key)
        self.live -= nbytes


class _FusedAttention(torch.autograd.Function):
    """What flash / memory-efficient attention keeps: q, k, v, the output and a float32 log-sum-exp."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _fused_sdpa(q, k, v, *args, **kwargs):
    return _FusedAttention.apply(q, k, v)


@dataclasses.dataclass
class Estimate:
    weights_gb: float  # UNet + VAE + text encoder in the run's dtype, plus the RL LoRA in float32
    work_gb: float  # everything else the run allocates at its peak (activations, buffers, optimizer)

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.work_gb


def _meta_models(unet_config: dict, vae_config: dict, rank: int, dtype):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from easyphoto_app.ddpo.ppo import add_rl_lora

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
        vae = AutoencoderKL.from_config(vae_config)
    for p in [*unet.parameters(), *vae.parameters()]:
        p.data = p.data.to(dtype)
    unet.requires_grad_(False)
    return unet, vae, add_rl_lora(unet, rank, init=True)  # (meta tensors cannot be initialised "gaussian")


def _bytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def _added_conditions(config, n: int, meta: dict) -> dict:
    """SDXL's UNet also takes a pooled text embedding and six time_ids per image."""
    if config.get("addition_embed_type") != "text_time":
        return {}
    pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    return {"added_cond_kwargs": {"text_embeds": torch.empty(n, pooled, **meta), "time_ids": torch.empty(n, 6, **meta)}}


def estimate_rl_memory(unet_config: dict, vae_config: dict, cfg, resolution: int, dtype=torch.float16,
                       cuda_savings: bool = True, text_encoder_bytes: int = 0) -> Estimate:
    """`cfg` is an RLConfig (samples_per_epoch, sample_batch, train_batch, timestep_batch, steps, rank).
    `cuda_savings`: gradient checkpointing and one-image-at-a-time VAE decoding, as the run does on CUDA."""
    unet, vae, lora = _meta_models(unet_config, vae_config, cfg.rank, dtype)
    if cuda_savings:
        unet.enable_gradient_checkpointing()
        vae.enable_slicing()
    c, h = unet.config.in_channels, resolution // 2 ** (len(vae.config.block_out_channels) - 1)  # as diffusers counts it
    ctx_len, ctx_dim = 77, unet.config.cross_attention_dim
    meta = {"device": "meta", "dtype": dtype}
    with _LiveBytes() as live, mock.patch("torch.nn.functional.scaled_dot_product_attention", _fused_sdpa):
        # kept for the whole epoch, in float32 whatever the weights (DDPO's step maths needs it)
        trajectory = torch.empty(cfg.samples_per_epoch, cfg.steps + 1, c, h, h, device="meta", dtype=torch.float32)
        cond = torch.empty(cfg.samples_per_epoch, ctx_len, ctx_dim, **meta)
        state = [torch.empty_like(p) for p in lora for _ in range(3)]  # grad + AdamW's two moments
        with torch.no_grad():
            b = cfg.sample_batch
            unet(torch.empty(2 * b, c, h, h, **meta), torch.tensor(999), torch.empty(2 * b, ctx_len, ctx_dim, **meta),
                 **_added_conditions(unet.config, 2 * b, meta))
            vae.decode(torch.empty(b, vae.config.latent_channels, h, h, **meta))
        unet.train()
        n = 2 * cfg.train_batch * max(1, cfg.timestep_batch)
        out = unet(torch.empty(n, c, h, h, **meta), torch.zeros(n, dtype=torch.long, device="meta"),
                   torch.empty(n, ctx_len, ctx_dim, **meta), **_added_conditions(unet.config, n, meta)).sample
        out.float().mean().backward()
        del trajectory, cond, state, out
    weights = _bytes(unet.parameters()) + _bytes(vae.parameters()) + text_encoder_bytes
    return Estimate(weights / GB, live.peak / GB)


def lower_settings(cfg) -> list[tuple[str, object]]:
    """Settings to try, in order, when the estimate does not fit (each keeps the earlier ones)."""
    out = []
    if cfg.timestep_batch > 1:
        out.append(("timestep_batch", 1))
    if cfg.sample_batch > 1:
        out.append(("sample_batch", 1))
    if cfg.samples_per_epoch > 4:
        out.append(("samples_per_epoch", 4))
    return out


def preflight(unet_config: dict, vae_config: dict, cfg, resolution: int, free_bytes: int, dtype=torch.float16) -> str | None:
    """None if the run's work fits in `free_bytes`; else one warning with the lower settings to try."""
    from easyphoto_app.models import human_size
    from easyphoto_app.settings import flag_of

    def work_bytes(c) -> int:
        return int(estimate_rl_memory(unet_config, vae_config, c, resolution, dtype).work_gb * GB)

    need = work_bytes(cfg)
    if need <= free_bytes:
        return None
    head = f"warning: these RL settings need about {human_size(need)} of GPU memory and {human_size(free_bytes)} is free"
    tried, applied, fits = cfg, [], need
    for name, value in lower_settings(cfg):
        tried, applied = dataclasses.replace(tried, **{name: value}), applied + [(name, value)]
        fits = work_bytes(tried)
        if fits <= free_bytes:
            changes = ", ".join(f"{n.replace('_', ' ')} {v} ({flag_of(n)} {v})" for n, v in applied)
            return f"{head}. Try {changes}: about {human_size(fits)}. Or lower the resolution."
    return f"{head}; even the smallest batch settings need about {human_size(fits)}: lower the resolution or use a larger GPU."
