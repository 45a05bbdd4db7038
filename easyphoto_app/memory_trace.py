"""GPU memory worked out before a job starts, without a GPU: the models are built on PyTorch's meta device (shapes,
no data, no compute) and the job's work is traced; the peak of live tensor bytes is the estimate.
Attention is counted as the fused GPU kernels hold it (output and log-sum-exp, no score matrix).
Not counted: the CUDA context, allocator slack and kernel workspaces. This is why the jobs compare the
activations with the memory that is free after the pipeline has loaded, not with the card's size.
RL's estimate is in ddpo/memory.py, the face LoRA's in train_memory.py.
"""

from __future__ import annotations

import dataclasses
import weakref
from contextlib import contextmanager
from unittest import mock

import torch  # noqa: TID253 - loaded only in a job, to trace a model
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: TID253 - loaded only in a job, to trace a model
from torch.utils._pytree import tree_flatten  # noqa: TID253 - loaded only in a job, to trace a model

from easyphoto_app.hub import human_size
from easyphoto_app.settings import flag_of

GB = 1024**3


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages made and alive at once, counting each once until it is freed. An output that shares
    an input's storage (a view such as the transposed weight F.linear makes, or an in-place result) is not new memory:
    counting it would count the model's weights, which live before and after the trace."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                if storage._cdata not in self._seen and storage._cdata not in inputs:
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


def fused_sdpa(q, k, v, *args, **kwargs):
    return _FusedAttention.apply(q, k, v)


@dataclasses.dataclass
class Estimate:
    weights_gb: float  # the models' weights on the GPU at the job's peak
    work_gb: float  # everything else the job allocates at its peak (activations, buffers, gradients, optimizer)

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.work_gb


def nbytes(params) -> int:
    return sum(p.numel() * p.element_size() for p in params)


def added_conditions(config, n: int, meta: dict) -> dict:
    """SDXL's UNet also takes a pooled text embedding and six time_ids per image."""
    if config.get("addition_embed_type") != "text_time":
        return {}
    pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
    return {"added_cond_kwargs": {"text_embeds": torch.empty(n, pooled, **meta), "time_ids": torch.empty(n, 6, **meta)}}


def vae_dtype(vae_config: dict, dtype):
    """What the autoencoder runs in: fp32 where it overflows in fp16 (`force_upcast`: SDXL's), as
    precision.vae_in_safe_dtype runs it."""
    return torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast", False) else dtype


def cast(model, dtype) -> None:
    for p in model.parameters():  # (not model.to(dtype): diffusers warns about that for every model it builds)
        p.data = p.data.to(dtype)


@contextmanager
def traced():
    """Live bytes of everything run inside, attention as the fused kernels hold it."""
    with LiveBytes() as live, mock.patch("torch.nn.functional.scaled_dot_product_attention", fused_sdpa):
        yield live


def _change(name: str, value) -> str:
    if isinstance(value, bool):
        return f"{name.replace('_', ' ')} {'on' if value else 'off'} ({flag_of(name if value else 'no_' + name)})"
    return f"{name.replace('_', ' ')} {value} ({flag_of(name)} {value})"


def preflight_warning(job: str, need, cfg, lower: list[tuple[str, object]], free_bytes: int) -> str | None:
    """None if need(cfg) bytes fit in `free_bytes`; else one warning naming the settings to lower, tried in order
    (each keeping the earlier ones), with what they would need."""
    first = need(cfg)
    if first <= free_bytes:
        return None
    head = (
        f"warning: these {job} settings need about {human_size(first)} of GPU memory and "
        f"{human_size(free_bytes)} is free"
    )
    tried, applied, fits = cfg, [], first
    for name, value in lower:
        tried, applied = dataclasses.replace(tried, **{name: value}), applied + [(name, value)]
        fits = need(tried)
        if fits <= free_bytes:
            changes = ", ".join(_change(n, v) for n, v in applied)
            return f"{head}. Try {changes}: about {human_size(fits)}. Or lower the resolution."
    return (
        f"{head}; even the smallest settings need about {human_size(fits)}: lower the resolution or use a larger GPU."
    )
