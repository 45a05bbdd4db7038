"""RAM (psutil) and VRAM (torch.cuda) sampling for job events and the live plots."""

from __future__ import annotations

import sys
import threading


def sample() -> dict:
    """One reading. VRAM fields are None when no CUDA GPU is in use."""
    import psutil

    vm = psutil.virtual_memory()
    row = {
        "rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        "ram_used_mb": round((vm.total - vm.available) / 2**20, 1),
        "ram_total_mb": round(vm.total / 2**20, 1),
        "vram_alloc_mb": None,
        "vram_reserved_mb": None,
        "vram_peak_mb": None,
    }
    torch = sys.modules.get("torch")  # never import torch just to find there is no GPU
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        row["vram_alloc_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        row["vram_reserved_mb"] = round(torch.cuda.memory_reserved() / 2**20, 1)
        row["vram_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row


def format_vram(row: dict) -> str:
    if row.get("vram_alloc_mb") is None:
        return "VRAM: n/a (CPU)"
    return (
        f"VRAM: {row['vram_alloc_mb']:.0f} MB allocated, {row['vram_reserved_mb']:.0f} MB reserved, peak "
        f"{row['vram_peak_mb']:.0f} MB"
    )


class Monitor:
    """Calls `emit(sample())` at once and then every `interval` seconds on a daemon thread until stopped."""

    def __init__(self, emit, interval: float):
        self.emit, self.interval = emit, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="easyphoto-monitor", daemon=True)
        self.peak_rss_mb = 0.0

    def _run(self):
        while not self._stop.wait(self.interval):
            self.tick()

    def tick(self) -> dict:
        row = sample()
        self.peak_rss_mb = max(self.peak_rss_mb, row["rss_mb"])
        self.emit(row)
        return row

    def __enter__(self):
        self.tick()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
