"""DDPO's update (trl's `_train_batched_samples` and `calculate_loss`): a PPO-clipped step on the sampled
trajectories, the log-probs recomputed under the current weights in float32 (sampling.py has the other half).
"""

from __future__ import annotations

import torch

from easyphoto_app.ddpo.ddim_logprob import ddim_step_with_logprob, step_std
from easyphoto_app.ddpo.sampling import Trajectories, guided_eps
from easyphoto_app.lora_adapters import UNET_TARGETS, add_lora
from easyphoto_app.precision import FP32

RL_ADAPTER = "ddpo"


def add_rl_lora(unet, rank: int, adapter: str = RL_ADAPTER, init: str | bool = "gaussian") -> list:
    """The RL LoRA: on the face LoRA's UNet targets, alpha = rank; its (float32, trainable) parameters."""
    return add_lora(unet, rank, rank, UNET_TARGETS, adapter, init)


def clipped_loss(advantages: torch.Tensor, log_prob: torch.Tensor, old_log_prob: torch.Tensor, clip_range: float):
    """PPO's clipped surrogate (to minimise) and the ratio. Where the ratio has left [1 - c, 1 + c] in the
    direction the advantage favours, the clipped term is the larger loss, so that sample's gradient is 0."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped).mean(), ratio


def calculate_loss(unet, scheduler, traj: Trajectories, idx, chunk, adv, uncond, cfg, precision=FP32):
    """The clipped loss of samples `idx` at timestep indices `chunk`, in one UNet pass (each latent with its own
    timestep); `adv` are those samples' advantages. Returns (loss, ratio, approx KL)."""
    b, k = len(idx), len(chunk)
    x_t = traj.latents[idx][:, chunk].flatten(0, 1)  # (b*k, C, H, W), sample-major
    x_prev = traj.latents[idx][:, chunk + 1].flatten(0, 1)
    t = traj.timesteps[chunk].unsqueeze(0).expand(b, k).reshape(-1)
    old = traj.log_probs[idx][:, chunk].reshape(-1).float()
    with precision.autocast():
        eps = guided_eps(unet, x_t, t, traj.cond[idx].repeat_interleave(k), uncond, cfg.guidance_scale)
    _, logp = ddim_step_with_logprob(scheduler, eps, t, x_t, cfg.eta, prev_sample=x_prev)
    loss, ratio = clipped_loss(adv.repeat_interleave(k).to(logp.device), logp, old, cfg.clip_range)
    return loss, ratio, 0.5 * ((logp - old) ** 2).mean().item()


def ppo_update(
    unet,
    scheduler,
    traj: Trajectories,
    advantages: torch.Tensor,
    uncond,
    optimizer,
    params,
    cfg,
    generator: torch.Generator,
    should_stop=lambda: False,
    sync_grads=lambda params: None,
    precision=FP32,
    scaler=None,
) -> dict:
    """One pass over the samples: for each train batch, a random subset of its timesteps, one optimizer step.

    `cfg.timestep_batch` timesteps go through the UNet in one batch (each latent with its own timestep);
    the gradient is the same as one timestep at a time, with fewer, larger passes. With fp16 weights,
    `scaler` (a GradScaler) keeps the gradients through the UNet above fp16's underflow."""
    scaler = scaler or precision.scaler()  # a run passes its own, so that the fp16 scale carries over
    n = traj.latents.shape[0]
    stochastic = torch.nonzero(step_std(scheduler, traj.timesteps.cpu(), cfg.eta) > 1e-6).flatten()
    if len(stochastic) == 0:
        raise ValueError("Every sampling step is deterministic (eta is 0?): DDPO needs eta > 0.")
    n_train_t = max(1, int(round(len(stochastic) * cfg.timestep_fraction)))
    adv = advantages.clamp(-cfg.adv_clip, cfg.adv_clip)
    stats = {"loss": [], "approx_kl": [], "clipfrac": [], "ratio_one": [], "grad_zero": [], "ratio_first": None}
    updates = skipped = 0
    order = torch.randperm(n, generator=generator)
    lora_b = [p for name, p in unet.named_parameters() if "lora_B" in name]  # once, not at every step
    for start in range(0, n, cfg.train_batch_size):
        if should_stop():
            break
        idx = order[start : start + cfg.train_batch_size]
        t_idx = stochastic[torch.randperm(len(stochastic), generator=generator)[:n_train_t]]
        optimizer.zero_grad(set_to_none=True)
        for chunk in t_idx.split(max(1, cfg.timestep_batch)):
            loss, ratio, kl = calculate_loss(unet, scheduler, traj, idx, chunk, adv[idx], uncond, cfg, precision)
            if stats["ratio_first"] is None:
                stats["ratio_first"] = ratio.detach().mean().item()
            scaler.scale(loss * len(chunk) / len(t_idx)).backward()  # = the mean over timesteps of their losses
            stats["loss"].append(loss.item())
            stats["approx_kl"].append(kl)
            stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip_range).float().mean().item())
            stats["ratio_one"].append((ratio.detach() == 1).float().mean().item())
        sync_grads(params)
        scaler.unscale_(optimizer)
        stats["grad_zero"].append(zero_grad_fraction(lora_b))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scale = scaler.get_scale()
        scaler.step(optimizer)  # skipped (and the scale lowered) if an fp16 gradient overflowed
        scaler.update()
        updates += 1
        if scaler.is_enabled() and scaler.get_scale() < scale:
            skipped += 1
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
    return {
        "loss": mean(stats["loss"]),
        "approx_kl": mean(stats["approx_kl"]),
        "clipfrac": mean(stats["clipfrac"]),
        "ratio_one_frac": mean(stats["ratio_one"]),
        "grad_zero_frac": mean(stats["grad_zero"]),
        "ratio_first": stats["ratio_first"],
        "updates": updates,
        "skipped_updates": skipped,
    }


def lora_change(params, before) -> dict:
    """How far the RL LoRA moved from `before` (copies of params), and its size now (one device sync)."""
    norms = torch.stack(
        [
            torch.stack([(p.detach().float() - b.float()).norm(), p.detach().float().norm()])
            for p, b in zip(params, before)
        ]
    )
    moved, size = norms.norm(dim=0).tolist()
    return {"update_norm": moved, "lora_norm": size}


def zero_grad_fraction(params) -> float:
    """The fraction of exactly-zero gradient entries in `params` (the LoRA B matrices), where fp16 underflow shows.
    (A's gradient is 0 by construction while B still is, so counting A would only blur the figure.)"""
    grads = [p.grad for p in params if p.grad is not None]
    total = sum(g.numel() for g in grads)
    return float(sum((g == 0).sum() for g in grads)) / total if total else 0.0
