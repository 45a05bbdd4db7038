"""Which device a job runs on: `--device auto` picks an NVIDIA GPU, then an Apple GPU, then the CPU."""

from __future__ import annotations

from easyphoto_app.errors import UserError


def pick_device(pref: str = "auto") -> str:
    import torch  # here, not at the top: the CLI's refusals and --help answer without loading torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if pref == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU (run 'doctor' for details).")
    if pref == "mps" and not has_mps:
        raise UserError("--device mps was asked for, but this machine has no Apple GPU available to PyTorch.")
    if pref not in ("cuda", "mps", "cpu"):
        raise UserError(f"Unknown device {pref!r}: use auto, cuda, mps or cpu.")
    return pref
