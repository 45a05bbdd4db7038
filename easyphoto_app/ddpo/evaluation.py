"""Evaluation: the mean reward of the current weights on fixed prompts and fixed noise, so that evaluations differ
only by the weights (the training samples' mean reward is a poor judge: random prompts and noise, and a max over
epochs is biased upward). A run evaluates every `eval_every` epochs, before the first and after the last unless
Stop ended it, and keeps the best evaluated weights; evaluating is kept under a share of the run's time."""

from __future__ import annotations

import torch

from easyphoto_app.ddpo.diagnose import diversity, thumbnail
from easyphoto_app.ddpo.rewards import merge_rewards

EVAL_SHARE_LIMIT = 0.15  # evaluation's share of the run's time


def eval_prompts(prompts: list[str], eval_samples: int, processes: int) -> list[str]:
    """Fixed prompts: the list's first ones, in order (cycled if the list is short), as many as asked rounded
    up to a multiple of the process count, so that every process scores an equal share."""
    count = -(-max(1, eval_samples) // processes) * processes
    return [prompts[i % len(prompts)] for i in range(count)]


def eval_share(cfg) -> float:
    """The planned share of the run's time spent evaluating: an evaluation samples without training, and a
    trained sample costs about 3 sampling passes (a backward is about 2 forwards) per inner epoch."""
    per_epoch = cfg.samples_per_epoch * (1 + 2 * cfg.timestep_fraction * cfg.inner_epochs)
    return cfg.eval_samples / (cfg.eval_samples + max(1, cfg.eval_every) * per_epoch)


def fit_eval_every(cfg, limit: float = EVAL_SHARE_LIMIT) -> str | None:
    """Evaluate less often when `cfg` would spend more than `limit` of the run on it; says so."""
    before = cfg.eval_every
    while eval_share(cfg) > limit and cfg.eval_every < max(1, cfg.epochs):
        cfg.eval_every += 1
    if cfg.eval_every == before:
        return None
    return (
        f"Evaluating every {cfg.eval_every} epochs instead of {before}, to keep it under {limit:.0%} of the "
        f"time with {cfg.samples_per_epoch} samples per epoch."
    )


def evaluate(sampler, reward_fn, sync, prompts: list[str], seed: int, timing, report) -> dict:
    """This process's share of `prompts` sampled in batches, each from noise fixed by `seed` and its place, and
    scored inline; every process's rewards and samples together. `timing()` times each batch (a training batch
    takes as long: the first one's estimate); `report(done, total)` after each. Returns the eval row's figures."""
    mine = prompts[sync.share(len(prompts))]
    first = sync.share(len(prompts)).start
    parts, thumbs = [], []
    for start in range(0, len(mine), sampler.cfg.sample_batch_size):
        batch = mine[start : start + sampler.cfg.sample_batch_size]
        generator = torch.Generator("cpu").manual_seed(seed + 7919 * (first + start + 1))  # the same noise each time
        with timing():
            _, images = sampler.batch(batch, generator)
            parts.append(reward_fn(images))
        thumbs += [thumbnail(im) for im in images]
        report(start + len(batch), len(mine))
    rewards, info = merge_rewards(parts)
    reward_t, _, info = sync.rewards(rewards, mine, info)
    spread = diversity(sync.objects(thumbs))  # over every process's samples
    return {
        "samples": len(reward_t),
        "reward_mean": float(reward_t.mean()),
        **info,
        "diversity": None if spread is None else round(spread, 4),
    }
