"""Which number format a job computes in, decided in one place.

`--precision auto` picks bf16 on CUDA cards that have it (Ampere and newer), fp16 on
other CUDA cards and on Apple GPUs, and fp32 on the CPU, where half-precision kernels
are slower than fp32. fp16 and bf16 can be asked for on the CPU too: they run the
same code path a GPU runs, which is how the tests cover it. RL's `auto` is fp16 on every
GPU, bf16-capable or not (`pick_rl_precision`): DDPO's clip range is 1e-4, and bf16's
coarser rounding moves most PPO ratios past it, so those samples teach nothing.

The weights are held in `dtype`; trainable LoRA parameters stay float32 and the
forward passes run under `autocast`. fp16 gradients through a UNet underflow (most
are below fp16's smallest normal number), so fp16 training scales the loss
(`scaler`); bf16 has fp32's exponent range and needs no scaling.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager
from dataclasses import dataclass

from easyphoto_app.errors import UserError

CHOICES = ("auto", "fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | fp16 | bf16
    device: str
    reason: str  # why auto chose it, or "asked for"

    @property
    def dtype(self):
        import torch

        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.name]

    @property
    def is_half(self) -> bool:
        return self.name != "fp32"

    def autocast(self):
        """Forward passes in the half type with float32 master weights; a no-op in fp32."""
        import torch

        if not self.is_half:
            return contextlib.nullcontext()
        return torch.autocast(_device_type(self.device), dtype=self.dtype)

    def scaler(self):
        """A gradient scaler for fp16 (disabled, a pass-through, for bf16 and fp32)."""
        import torch

        return torch.amp.GradScaler(_device_type(self.device), enabled=self.name == "fp16")


FP32 = Precision("fp32", "cpu", "the default")  # for callers that name none: no autocast, no scaling


def _device_type(device: str) -> str:
    return str(device).split(":")[0]


def pick_precision(choice: str, device: str) -> Precision:
    import torch

    choice = (choice or "auto").lower()
    if choice not in CHOICES:
        raise UserError(f"Unknown precision {choice!r}: use {', '.join(CHOICES)}.")
    kind = _device_type(device)
    if choice != "auto":
        if choice == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("This GPU has no bf16 support: use --precision fp16 (or auto).")
        return Precision(choice, device, "asked for")
    if kind == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", device, "auto: this CUDA GPU supports bf16 (fp16's precision, fp32's range)")
        return Precision("fp16", device, "auto: this CUDA GPU has no bf16, so fp16 with gradient scaling")
    if kind == "mps":
        return Precision("fp16", device, "auto: Apple GPU")
    return Precision("fp32", device, "auto: on the CPU fp32 is the fastest and exact")


def pick_rl_precision(choice: str, device: str) -> Precision:
    """RL's number format: as asked; for `auto`, fp16 on a GPU (even one with bf16) and fp32 on the CPU.

    Measured on the face model (benchmarks/ddpo.py --reward face, 4 epochs, CPU): once the weights move, rounding
    pushes PPO ratios past DDPO's clip range of 1e-4, and those samples give no gradient: 79-84% of them in bf16
    (8-bit mantissa), 18-26% in fp16 (11-bit), 2-3% in fp32. fp16's scaler skipped no update on trained weights,
    and fp32 would double the GPU memory."""
    if (choice or "auto").lower() != "auto":
        return pick_precision(choice, device)
    if _device_type(device) in ("cuda", "mps"):
        return Precision(
            "fp16",
            device,
            "auto for RL: fp16 rounds finely enough for DDPO's clip range, where bf16's "
            "rounding clips most updates; the gradient scaler guards against overflow",
        )
    return Precision("fp32", device, "auto: on the CPU fp32 is the fastest and exact")


@contextmanager
def vae_in_safe_dtype(vae):
    """An autoencoder whose config says it overflows in fp16 (`force_upcast`: SDXL's) runs in fp32 inside this block,
    as diffusers' own pipelines decode it; any other stays as it is."""
    import torch

    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae
    finally:
        if upcast:
            vae.to(torch.float16)
