"""A synthetic events file of an RL run, as ddpo/job.py writes it: a memory row every 2 s, and per epoch the
progress of each sample batch, the epoch's metric row and progress; an evaluation every 10 epochs; a few logs.
Used by test_jobs (the bound on plotted points) and benchmarks/long_run.py (the panel's cost per tick)."""

from __future__ import annotations

import json
from pathlib import Path

T0 = 1_800_000_000.0
MEMORY = {
    "rss_mb": 2048.0,
    "ram_used_mb": 9000.0,
    "ram_total_mb": 64000.0,
    "vram_alloc_mb": 5000.0,
    "vram_reserved_mb": 6000.0,
    "vram_peak_mb": 5500.0,
}


def epoch_row(epoch: int, t: float, left: float) -> dict:
    return {
        "t": t,
        "type": "metric",
        "kind": "epoch",
        "epoch": epoch,
        "reward_mean": 0.3 + epoch * 1e-4,
        "reward_std": 0.05,
        "no_face_rate": 0.1,
        "approx_kl": 1e-5,
        "clipfrac": 0.01,
        "epoch_s": 60.0,
        "time_left_s": left,
        "best_epoch": epoch,
        "precision": "bf16",
    }


def rl_events(seconds: float, epochs: int) -> list[dict]:
    """The events of an RL run of `seconds` with `epochs` epochs spread evenly over it, in time order."""
    events = [{"t": T0, "type": "log", "message": "RL for 'ann': up to 720 epochs, budget 12 h"}]
    events += [
        {"t": T0 + i * 2.0, "type": "metric", "kind": "memory", **MEMORY, "rss_mb": 2048.0 + i % 97}
        for i in range(int(seconds // 2))
    ]
    per = seconds / max(epochs, 1)
    for epoch in range(epochs):
        t = T0 + epoch * per
        events += [
            {
                "t": t + b,
                "type": "progress",
                "step": epoch,
                "total": epochs,
                "phase": f"sampling {b}/8",
                "eta_s": seconds - t + T0,
            }
            for b in range(1, 9)
        ]
        events.append(epoch_row(epoch, t + per - 1, seconds - (t + per - T0)))
        if epoch % 10 == 0:
            events.append(
                {
                    "t": t + per - 0.5,
                    "type": "metric",
                    "kind": "eval",
                    "epoch": epoch,
                    "reward_mean": 0.3,
                    "best_reward": 0.3,
                    "best_epoch": epoch,
                }
            )
    return sorted(events, key=lambda e: e["t"])


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path
