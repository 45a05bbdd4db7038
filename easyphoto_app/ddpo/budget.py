"""The RL time budget ("max time (hours) of RL").

The promise: from the start of `rl` to its `done` event takes at most the budget, the final evaluation and the
written file included. Work is only started when it fits: a sample batch or a PPO step starts only if the longest
one so far, then the final evaluation (as long as the last one) and a save (as long as the longest so far) still
end before the deadline. Only a budget too short for loading the model and the first evaluation runs over; such a
run ends right after that evaluation, with the untrained RL LoRA written.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


class Budget:
    def __init__(self, hours: float):
        self.deadline = time.time() + hours * 3600
        self.batch_s = 0.0  # the longest sample batch (sampling, decoding and its reward) so far
        self.step_s = 0.0  # the longest PPO step so far
        self.save_s = 0.0  # the longest checkpoint save so far
        self.eval_s = 0.0  # the last evaluation's duration: the final one is expected to take as long

    def left(self) -> float:
        return max(0.0, self.deadline - time.time())

    def reserve(self) -> float:
        """What the end of the run needs: the final evaluation and writing the file."""
        return self.eval_s + self.save_s

    def room_for(self, seconds: float) -> bool:
        """Whether work of this length can start and still leave the end of the run its time."""
        return time.time() + seconds + self.reserve() < self.deadline

    @contextmanager
    def timing(self, name: str, longest: bool = True):
        """Times the block into `name`: the longest so far, or (longest=False) the latest."""
        t0 = time.time()
        try:
            yield
        finally:
            took = time.time() - t0
            setattr(self, name, max(getattr(self, name), took) if longest else took)

    def eta_s(self, cfg, batches: int, epochs_left: int) -> float | None:
        """The seconds the run still needs, within the budget, from the slowest sample batch so far: an epoch samples
        its `batches` and trains them at about twice that again per inner epoch (evaluation.eval_share's cost
        model). None before a batch has been timed."""
        if not self.batch_s:
            return None
        per_epoch = batches * self.batch_s * (1 + 2 * cfg.timestep_fraction * cfg.inner_epochs)
        return round(min(self.left(), epochs_left * per_epoch), 1)

    def steps(self, stop):
        """A should_stop for a loop of steps of one kind (called before each): it times each step, from one call to
        the next, into step_s, and returns stop(step_s), whether the next step should not start."""
        last = None

        def should_stop() -> bool:
            nonlocal last
            now = time.time()
            if last is not None:
                self.step_s = max(self.step_s, now - last)
            last = now
            return stop(self.step_s)

        return should_stop
