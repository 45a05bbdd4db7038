"""Per-prompt reward normalisation: advantages = (reward - mean) / std over a buffer per prompt."""

from __future__ import annotations

from collections import deque

import numpy as np


class PerPromptStatTracker:
    def __init__(self, buffer_size: int = 32, min_count: int = 16):
        self.buffer_size, self.min_count = buffer_size, min_count
        self.stats: dict[str, deque] = {}

    def update(self, prompts: list[str], rewards) -> np.ndarray:
        rewards = np.asarray(rewards, dtype=np.float64)
        advantages = np.empty_like(rewards)
        for prompt in set(prompts):
            mask = np.array([p == prompt for p in prompts])
            buf = self.stats.setdefault(prompt, deque(maxlen=self.buffer_size))
            buf.extend(rewards[mask].tolist())
            pool = np.array(buf) if len(buf) >= self.min_count else rewards  # too few yet: the whole batch
            advantages[mask] = (rewards[mask] - pool.mean()) / (pool.std() + 1e-6)
        return advantages

    def state(self) -> dict:
        return {p: list(b) for p, b in self.stats.items()}

    def load(self, state: dict) -> None:
        self.stats = {p: deque(v, maxlen=self.buffer_size) for p, v in state.items()}
