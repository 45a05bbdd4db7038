"""Rewards (trl's `compute_rewards`): a reward is a plain callable `fn(images) -> (rewards, info)`, as in
kvablack/ddpo-pytorch; this unit scores an epoch's batches and turns the rewards into advantages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch

from easyphoto_app.ddpo.stat_tracking import PerPromptStatTracker


class Rewards:
    """Scores each sample batch as it comes: on a worker thread when `background` (on a GPU the next batch is
    sampled while the face backend, on the CPU, scores the last one; on a CPU both would fight for the same
    cores), else inline. `collect` returns the epoch's rewards in sampling order and their merged info."""

    def __init__(self, reward_fn, background: bool):
        self.reward_fn = reward_fn
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="reward") if background else None
        self.pending: list = []

    def submit(self, images: list) -> None:
        self.pending.append(self.pool.submit(self.reward_fn, images) if self.pool else self.reward_fn(images))

    def collect(self) -> tuple[list[float], dict]:
        parts = [p.result() if self.pool else p for p in self.pending]
        self.pending = []
        return merge_rewards(parts)

    def discard(self) -> None:
        """Drops what an interrupted epoch submitted."""
        self.pending = []

    def close(self) -> None:
        if self.pool:
            self.pool.shutdown(wait=False, cancel_futures=True)


def merge_rewards(parts: list[tuple[list[float], dict]]) -> tuple[list[float], dict]:
    """Per-batch (rewards, info) -> one; info values (rates) are averaged over the samples."""
    rewards = [r for part, _ in parts for r in part]
    keys = {k for _, info in parts for k in info}
    info = {k: sum(info.get(k, 0.0) * len(part) for part, info in parts) / max(len(rewards), 1) for k in keys}
    return rewards, info


def advantages(tracker: PerPromptStatTracker, prompts: list[str], rewards: torch.Tensor, mine: slice) -> torch.Tensor:
    """Every process's rewards normalised per prompt (the tracker sees them all, so it stays the same everywhere);
    `mine` is this process's share."""
    return torch.tensor(tracker.update(prompts, rewards.tolist()), dtype=torch.float32)[mine]
