"""Several processes, one per GPU, as `accelerate launch` (or torchrun) starts them.

The launcher sets RANK / WORLD_SIZE / LOCAL_RANK; one process (rank 0) owns the files, the events and
the GPU lock, the others compute. Only RL is data-parallel; the face LoRA (minutes on one GPU) is not.
"""

from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def bind_local_gpu() -> None:
    """Make "cuda" mean this process's own GPU, so the rest of the code needs no device index."""
    if world() > 1:
        import torch

        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
