"""What an RL run leaves: the RL LoRA (from the best evaluated weights, with its settings and how the run ended),
best.json beside the checkpoints, and each epoch's first samples with their rewards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from easyphoto_app.lora_io import save_lora
from easyphoto_app.workspace import atomic_write_json


@dataclass
class RLResult:
    path: Path
    message: str
    epochs: int
    best_epoch: int
    best_reward: float


def write_rl_lora(run, reason: str) -> RLResult:
    """`run` is an RLRun after setup; `reason` says what ended it."""
    cfg, evaluated = run.cfg, run.best_epoch >= 0
    path = save_lora(
        run.ws.ddpo_lora(run.user),
        run.best_state,
        float(cfg.rank),
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(cfg.rank),
            "ss_network_alpha": str(float(cfg.rank)),
            "ss_base_model_version": run.family.WEBUI_VERSION,
            "easyphoto_user": run.user,
            "easyphoto_kind": "ddpo",
            "easyphoto_base_model": run.model.source,
            "easyphoto_best_epoch": run.best_epoch,
            "easyphoto_best_reward": run.best_reward if evaluated else None,
            "easyphoto_epochs": run.epoch,
            "easyphoto_settings": vars(cfg),
            "easyphoto_end": reason,
        },
        owner=run.user,
        family=run.family,
    )
    best = (
        f"best evaluated after {run.best_epoch} epoch(s) (mean reward {run.best_reward:.4f})"
        if evaluated
        else "no evaluation finished"
    )
    message = f"RL LoRA written to {path} after {run.epoch} epoch(s), {best}; ended by {reason}."
    atomic_write_json(
        run.work / "best.json",
        {
            "epoch": run.best_epoch,
            "reward": run.best_reward if evaluated else None,
            "epochs": run.epoch,
            "reason": reason,
            "path": str(path),
        },
    )
    return RLResult(path, message, run.epoch, run.best_epoch, run.best_reward)


def save_samples(folder: Path, images: list, rewards: list[float], keep: int = 8) -> None:
    """The epoch's first `keep` samples as latest-<i>.png and their rewards in latest.json (the RL tab shows them)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, img in enumerate(images[:keep]):
        img.save(folder / f"latest-{i}.png")
    atomic_write_json(
        folder / "latest.json",
        [{"file": f"latest-{i}.png", "reward": round(float(r), 4)} for i, r in enumerate(rewards[:keep])],
    )


def epoch_row(run, reward_t, info: dict, stats: dict, seconds: tuple[float, float, float]) -> dict:
    """An epoch's figures (an event, and the checkpoint's history): its rewards, the reward's info, the update's
    stats; `seconds` = (the epoch, its sampling, its training)."""
    n, (epoch_s, sample_s, train_s) = len(reward_t), seconds
    row = {
        "epoch": run.epoch,
        "samples": n,
        "reward_mean": float(reward_t.mean()),
        "reward_std": float(reward_t.std()) if n > 1 else 0.0,
        "reward_min": float(reward_t.min()),
        "reward_max": float(reward_t.max()),
        **info,
        **stats,
        "epoch_s": round(epoch_s, 3),
        "sample_per_s": round(n / max(sample_s, 1e-9), 3),
        "train_per_s": round(n / max(train_s, 1e-9), 3),
        "time_left_s": round(run.budget.left(), 1),
        "best_epoch": run.best_epoch,
        "precision": run.precision.name,
    }
    if run.precision.name == "fp16":
        row["grad_scale"] = float(run.scaler.get_scale())
    if run.sync.world > 1:
        row["processes"] = run.sync.world
    return row
