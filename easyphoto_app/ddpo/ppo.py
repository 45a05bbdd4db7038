"""DDPO's two halves: sample trajectories with log-probs, then a PPO-clipped update."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from easyphoto_app.ddpo.ddim_logprob import ddim_step_with_logprob, step_std


def add_rl_lora(unet, rank: int, adapter: str = "ddpo", init: str | bool = "gaussian") -> list:
    """The RL LoRA on the UNet's attention projections; its parameters (float32, trainable) for the optimizer."""
    from peft import LoraConfig

    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=init,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name=adapter)
    params = [p for name, p in unet.named_parameters() if f".{adapter}." in name]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


@dataclass
class Trajectories:
    latents: torch.Tensor  # [B, T+1, C, H, W]: x_T ... x_0
    log_probs: torch.Tensor  # [B, T]
    timesteps: torch.Tensor  # [T]
    cond: torch.Tensor  # [B, L, D] prompt embeddings
    prompts: list[str]


def guided_eps(unet, latents, t, cond, uncond, guidance: float):
    """Classifier-free guidance, the same in sampling and in training."""
    t = t if t.ndim == 0 else torch.cat([t, t])  # one timestep per latent when training several at once
    out = unet(torch.cat([latents, latents]), t, torch.cat([uncond.expand_as(cond), cond])).sample
    eps_uncond, eps_cond = out.chunk(2)
    return eps_uncond + guidance * (eps_cond - eps_uncond)


@torch.no_grad()
def sample(unet, scheduler, cond, uncond, prompts, steps: int, guidance: float, eta: float, shape,
           generator: torch.Generator) -> Trajectories:
    scheduler.set_timesteps(steps, device=cond.device)
    latents = torch.randn((cond.shape[0], *shape), generator=generator).to(cond.device, cond.dtype)
    all_latents, log_probs = [latents], []
    for t in scheduler.timesteps:
        eps = guided_eps(unet, latents, t, cond, uncond, guidance)
        latents, lp = ddim_step_with_logprob(scheduler, eps, t, latents, eta, generator=generator)
        all_latents.append(latents)
        log_probs.append(lp)
    return Trajectories(torch.stack(all_latents, 1), torch.stack(log_probs, 1), scheduler.timesteps.clone(), cond, prompts)


@torch.no_grad()
def decode(vae, latents) -> list:
    from PIL import Image

    images = vae.decode(latents / vae.config.scaling_factor).sample
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def ppo_update(unet, scheduler, traj: Trajectories, advantages: torch.Tensor, uncond, optimizer, params, cfg,
               generator: torch.Generator, should_stop=lambda: False, sync_grads=lambda params: None) -> dict:
    """One pass over the samples: for each train batch, a random subset of its timesteps, one optimizer step.

    `cfg.timestep_batch` timesteps go through the UNet in one batch (each latent with its own timestep);
    the gradient is the same as one timestep at a time, with fewer, larger passes."""
    n = traj.latents.shape[0]
    stochastic = torch.nonzero(step_std(scheduler, traj.timesteps.cpu(), cfg.eta) > 1e-6).flatten()
    if len(stochastic) == 0:
        raise ValueError("Every sampling step is deterministic (eta is 0?): DDPO needs eta > 0.")
    n_train_t = max(1, int(round(len(stochastic) * cfg.timestep_fraction)))
    adv = advantages.clamp(-cfg.adv_clip, cfg.adv_clip)
    stats = {"loss": [], "approx_kl": [], "clipfrac": [], "ratio_first": None}
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, cfg.train_batch):
        if should_stop():
            break
        idx = order[start:start + cfg.train_batch]
        t_idx = stochastic[torch.randperm(len(stochastic), generator=generator)[:n_train_t]]
        optimizer.zero_grad(set_to_none=True)
        b = len(idx)
        for chunk in t_idx.split(max(1, cfg.timestep_batch)):
            k = len(chunk)
            x_t = traj.latents[idx][:, chunk].flatten(0, 1)  # (b*k, C, H, W), sample-major
            x_prev = traj.latents[idx][:, chunk + 1].flatten(0, 1)
            t = traj.timesteps[chunk].unsqueeze(0).expand(b, k).reshape(-1)
            old = traj.log_probs[idx][:, chunk].reshape(-1).float()
            eps = guided_eps(unet, x_t, t, traj.cond[idx].repeat_interleave(k, dim=0), uncond, cfg.guidance)
            _, logp = ddim_step_with_logprob(scheduler, eps, t, x_t, cfg.eta, prev_sample=x_prev)
            ratio = torch.exp(logp.float() - old)
            if stats["ratio_first"] is None:
                stats["ratio_first"] = ratio.detach().mean().item()
            a = adv[idx].repeat_interleave(k).to(ratio.device)
            loss = torch.maximum(-a * ratio, -a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)).mean()
            (loss * k / len(t_idx)).backward()  # = the mean over timesteps of the per-timestep losses
            stats["loss"].append(loss.item())
            stats["approx_kl"].append(0.5 * ((logp.float() - old) ** 2).mean().item())
            stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip_range).float().mean().item())
        sync_grads(params)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    mean = lambda xs: float(sum(xs) / len(xs)) if xs else 0.0  # noqa: E731
    return {"loss": mean(stats["loss"]), "approx_kl": mean(stats["approx_kl"]), "clipfrac": mean(stats["clipfrac"]),
            "ratio_first": stats["ratio_first"]}
