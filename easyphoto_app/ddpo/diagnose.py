"""Whether RL is learning, in words: conditions read from each epoch's figures, each with what to do.

A condition is said once per run, as an event {"type": "warning", "code", "message"}, when it has held for
PERSIST epochs in a row. At the end, `closing` says whether the evaluated reward (the likeness) rose and by how
much, and if it did not, the likeliest reason: the first condition below that held in the last epoch (said as a
warning too, if it had not been).

Each evaluation also measures its samples' diversity (`diversity`). `collapsing` is said once, at the first evaluation
where it falls below COLLAPSE of the first evaluation's, without waiting for PERSIST: on fixed prompts and noise a
fall comes from the weights, not from chance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

PERSIST = 2  # epochs in a row
CLIPPED = 0.9  # a clip fraction from here up: the ratio is rounding noise, not a step
STILL = 1e-6  # an epoch's change of the RL LoRA below this fraction of its size: it did not move
COLLAPSE = 0.5  # evaluated diversity below this share of the first evaluation's: the samples are becoming one look
THUMB = 32  # diversity compares the samples at this size: composition, light and colour, not the finest texture
COLLAPSING = (
    "The samples are collapsing into one look: on the evaluation's fixed prompts and noise they now differ "
    "{ratio:.0%} as much as at the start (diversity {diversity:.3f}, first {first:.3f}), so the RL LoRA is "
    "copying one look rather than learning the face. Use the RL LoRA at a lower weight, or run again with a "
    "lower learning rate (now {lr:g}) or fewer epochs."
)


@dataclass(frozen=True)
class Condition:
    code: str
    holds: Callable[[dict], bool]
    message: str  # formatted with the epoch's row, `n` (epochs in a row) and `lr`


def _faces(row: dict) -> bool:
    return row.get("no_face_rate", 0.0) < 1.0  # a reward without a face detector has no such rate


def _moved(row: dict) -> bool:
    return row.get("update_norm", 1.0) > STILL * max(row.get("lora_norm", 1.0), 1e-12)


CONDITIONS = [
    Condition(
        "no_face",
        lambda r: not _faces(r),
        "No sample had a face in the last {n} epoch(s): every reward is 0, so there is nothing to learn from. Train "
        "the face LoRA longer or raise its weight, and check the base model and the prompts.",
    ),
    Condition(
        "equal_rewards",
        lambda r: _faces(r) and r["reward_std"] == 0.0,
        "Every sample of the last {n} epoch(s) got the same reward ({reward_mean:.3f}), so every advantage is 0 and "
        "no update has a direction. Sample more images per epoch, or check that the reward can tell them apart.",
    ),
    Condition(
        "skipped_updates",
        lambda r: r.get("skipped_updates", 0) > 0,
        "fp16 overflowed: the gradient scaler skipped {skipped_updates} of {updates} update(s) in the last epoch. "
        "Switch to --precision bf16 (or fp32).",
    ),
    Condition(
        "not_moving",
        lambda r: _faces(r) and r["reward_std"] > 0 and not _moved(r),
        "The RL LoRA did not move in the last {n} epoch(s) (change {update_norm:.1e}; "
        "{ratio_one_frac:.0%} of the PPO ratios exactly 1). Raise the learning rate (now {lr:g}) or the clip range.",
    ),
    Condition(
        "clipped",
        lambda r: r.get("clipfrac", 0.0) >= CLIPPED,
        "{clipfrac:.0%} of the PPO ratios fell outside the clip range in the last {n} epoch(s), so their updates "
        "were clipped away: at {precision} the ratio is mostly rounding noise. Use --precision fp32 (or fp16, if this "
        "ran in bf16).",
    ),
]


def thumbnail(image) -> np.ndarray:
    """An image (PIL or array) as THUMB x THUMB RGB floats in 0-1, what `diversity` compares."""
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    return np.asarray(img.convert("RGB").resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32) / 255


def diversity(thumbs: list[np.ndarray]) -> float | None:
    """The mean pairwise RMS distance between thumbnails (0 = all the same image); None for fewer than two."""
    if len(thumbs) < 2:
        return None
    flat = np.stack(thumbs).reshape(len(thumbs), -1).astype(np.float64)
    pairs = [np.sqrt(((flat[i + 1 :] - flat[i]) ** 2).mean(axis=1)) for i in range(len(flat) - 1)]
    return float(np.concatenate(pairs).mean())


class Diagnostics:
    def __init__(self, lr: float):
        self.lr = lr
        self.streak = {c.code: 0 for c in CONDITIONS}
        self.said: set[str] = set()
        self.last: dict | None = None

    def epoch(self, row: dict) -> list[tuple[str, str]]:
        """The (code, message) pairs that are due after this epoch."""
        self.last = row
        due = []
        for c in CONDITIONS:
            self.streak[c.code] = self.streak[c.code] + 1 if c.holds(row) else 0
            if self.streak[c.code] >= PERSIST and c.code not in self.said:
                self.said.add(c.code)
                due.append((c.code, self._words(c)))
        return due

    def _words(self, c: Condition) -> str:
        return c.message.format(**{**self.last, "n": self.streak[c.code], "lr": self.lr})

    def evaluated(self, evals: list[dict]) -> list[tuple[str, str]]:
        """`collapsing` once, when the last evaluation's diversity is below COLLAPSE of the first one's."""
        first, last = (evals[0].get("diversity"), evals[-1].get("diversity")) if evals else (None, None)
        if not first or last is None or last >= COLLAPSE * first or "collapsing" in self.said:
            return []
        self.said.add("collapsing")
        return [("collapsing", COLLAPSING.format(ratio=last / first, diversity=last, first=first, lr=self.lr))]

    def likely_reason(self) -> tuple[str, str] | None:
        """The first condition that held in the last epoch, as (code, message)."""
        held = [c for c in CONDITIONS if self.last is not None and c.holds(self.last)]
        return (held[0].code, self._words(held[0])) if held else None

    def closing(self, evals: list[dict], epochs: int) -> tuple[str, list[tuple[str, str]]]:
        """The run's last words: whether the evaluated reward rose from the first evaluation (the face LoRA alone)
        to the best one, and by how much; if not, the likeliest reason, also due as a warning if not said yet."""
        if not evals:
            return "No evaluation finished, so whether RL helped is not known.", []
        start, best = evals[0]["reward_mean"], max(evals, key=lambda e: e["reward_mean"])
        if best["reward_mean"] > start:
            return (
                f"RL raised the evaluated likeness from {start:.3f} to {best['reward_mean']:.3f} "
                f"(+{best['reward_mean'] - start:.3f}), best after {best['epoch']} epoch(s)."
            ), []
        reason = self.likely_reason()
        if reason is None:
            return (
                f"RL did not raise the evaluated likeness (it stayed at {start:.3f}). No fault showed in the figures: "
                f"{epochs} epoch(s) may be too few; give it more time or more samples per epoch."
            ), []
        due = [] if reason[0] in self.said else [reason]
        self.said.add(reason[0])
        return f"RL did not raise the evaluated likeness (it stayed at {start:.3f}). {reason[1]}", due
