"""DDPO's two halves: sample trajectories with log-probs, then a PPO-clipped update.

The UNet runs in the dtype of the prompt embeddings it is given (fp16, bf16 or fp32) under
`precision.autocast()`; the latent trajectory, the DDIM step and the log-probs stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from easyphoto_app.ddpo.ddim_logprob import ddim_step_with_logprob, step_std
from easyphoto_app.families.conditioning import Cond
from easyphoto_app.lora_adapters import UNET_TARGETS, add_lora
from easyphoto_app.precision import FP32


def add_rl_lora(unet, rank: int, adapter: str = "ddpo", init: str | bool = "gaussian") -> list:
    """The RL LoRA: on the face LoRA's UNet targets, alpha = rank; its (float32, trainable) parameters."""
    return add_lora(unet, rank, rank, UNET_TARGETS, adapter, init)


@dataclass
class Trajectories:
    latents: torch.Tensor  # [B, T+1, C, H, W]: x_T ... x_0
    log_probs: torch.Tensor  # [B, T]
    timesteps: torch.Tensor  # [T]
    cond: Cond  # the prompts' conditioning, a batch of B
    prompts: list[str]


def guided_eps(unet, latents, t, cond: Cond, uncond: Cond, guidance: float):
    """Classifier-free guidance, the same in sampling and in training. The UNet sees the latents in the
    embeddings' dtype; the guided eps comes back float32."""
    t = t if t.ndim == 0 else torch.cat([t, t])  # one timestep per latent when training several at once
    x = torch.cat([latents, latents]).to(cond.dtype)
    both = Cond.cat([uncond.expand(len(cond)), cond])
    out = unet(x, t, **both.unet_kwargs()).sample.float()
    eps_uncond, eps_cond = out.chunk(2)
    return eps_uncond + guidance * (eps_cond - eps_uncond)


@torch.no_grad()
def sample(
    unet,
    scheduler,
    cond,
    uncond,
    prompts,
    steps: int,
    guidance: float,
    eta: float,
    shape,
    generator: torch.Generator,
    precision=FP32,
) -> Trajectories:
    scheduler.set_timesteps(steps, device=cond.device)
    latents = torch.randn((len(cond), *shape), generator=generator).to(cond.device, torch.float32)
    all_latents, log_probs = [latents], []
    for t in scheduler.timesteps:
        with precision.autocast():
            eps = guided_eps(unet, latents, t, cond, uncond, guidance)
        latents, lp = ddim_step_with_logprob(scheduler, eps, t, latents, eta, generator=generator)
        all_latents.append(latents)
        log_probs.append(lp)
    return Trajectories(
        torch.stack(all_latents, 1), torch.stack(log_probs, 1), scheduler.timesteps.clone(), cond, prompts
    )


@torch.no_grad()
def decode(vae, latents) -> list:
    from PIL import Image

    from easyphoto_app.precision import vae_in_safe_dtype

    with vae_in_safe_dtype(vae):
        images = vae.decode((latents / vae.config.scaling_factor).to(vae.dtype)).sample
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def clipped_loss(advantages: torch.Tensor, log_prob: torch.Tensor, old_log_prob: torch.Tensor, clip_range: float):
    """PPO's clipped surrogate (to minimise) and the ratio. Where the ratio has left [1 - c, 1 + c] in the
    direction the advantage favours, the clipped term is the larger loss, so that sample's gradient is 0."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped).mean(), ratio


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
    for start in range(0, n, cfg.train_batch_size):
        if should_stop():
            break
        idx = order[start : start + cfg.train_batch_size]
        t_idx = stochastic[torch.randperm(len(stochastic), generator=generator)[:n_train_t]]
        optimizer.zero_grad(set_to_none=True)
        b = len(idx)
        for chunk in t_idx.split(max(1, cfg.timestep_batch)):
            k = len(chunk)
            x_t = traj.latents[idx][:, chunk].flatten(0, 1)  # (b*k, C, H, W), sample-major
            x_prev = traj.latents[idx][:, chunk + 1].flatten(0, 1)
            t = traj.timesteps[chunk].unsqueeze(0).expand(b, k).reshape(-1)
            old = traj.log_probs[idx][:, chunk].reshape(-1).float()
            with precision.autocast():
                eps = guided_eps(unet, x_t, t, traj.cond[idx].repeat_interleave(k), uncond, cfg.guidance_scale)
            _, logp = ddim_step_with_logprob(scheduler, eps, t, x_t, cfg.eta, prev_sample=x_prev)
            a = adv[idx].repeat_interleave(k).to(logp.device)
            loss, ratio = clipped_loss(a, logp, old, cfg.clip_range)
            if stats["ratio_first"] is None:
                stats["ratio_first"] = ratio.detach().mean().item()
            scaler.scale(loss * k / len(t_idx)).backward()  # = the mean over timesteps of the per-timestep losses
            stats["loss"].append(loss.item())
            stats["approx_kl"].append(0.5 * ((logp - old) ** 2).mean().item())
            stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip_range).float().mean().item())
            stats["ratio_one"].append((ratio.detach() == 1).float().mean().item())
        sync_grads(params)
        scaler.unscale_(optimizer)
        stats["grad_zero"].append(zero_grad_fraction(unet))
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


def zero_grad_fraction(model) -> float:
    """The fraction of exactly-zero gradient entries in the LoRA B matrices, where fp16 underflow shows. (A's
    gradient is 0 by construction while B still is, so counting A would only blur the figure.)"""
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n and p.grad is not None]
    total = sum(g.numel() for g in grads)
    return float(sum((g == 0).sum().item() for g in grads) / total) if total else 0.0
