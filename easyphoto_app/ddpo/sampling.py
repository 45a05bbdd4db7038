"""Sampling (trl's `_generate_samples`): DDIM trajectories with each step's log-prob, decoded to images.

The UNet runs in the dtype of the prompt embeddings it is given (fp16, bf16 or fp32) under
`precision.autocast()`; the latent trajectory, the DDIM step and the log-probs stay float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from easyphoto_app.ddpo.ddim_logprob import ddim_step_with_logprob
from easyphoto_app.families.conditioning import Cond
from easyphoto_app.precision import FP32, vae_in_safe_dtype


@dataclass
class Trajectories:
    latents: torch.Tensor  # [B, T+1, C, H, W]: x_T ... x_0
    log_probs: torch.Tensor  # [B, T]
    timesteps: torch.Tensor  # [T]
    cond: Cond  # the prompts' conditioning, a batch of B
    prompts: list[str]

    @staticmethod
    def join(parts: list[Trajectories]) -> Trajectories:
        """Batches of one epoch as one (they share the timesteps)."""
        return Trajectories(
            torch.cat([t.latents for t in parts]),
            torch.cat([t.log_probs for t in parts]),
            parts[0].timesteps,
            Cond.cat([t.cond for t in parts]),
            [p for t in parts for p in t.prompts],
        )


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
    """One image at a time, as vae slicing does: the decoder's full-size activations are the peak of a sample
    batch's memory (benchmarks/ddpo.py on the CPU, batches of 4: the run's peak RSS fell from 851 to 797 MB)."""
    images = []
    with vae_in_safe_dtype(vae):
        for z in latents / vae.config.scaling_factor:
            image = vae.decode(z[None].to(vae.dtype)).sample[0]
            arr = ((image.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(arr))
    return images


def drop_vae_encoder(vae) -> None:
    """RL only decodes: the VAE's encoder (SD 1.5's 34M weights) is freed once the run is set up."""
    del vae.encoder, vae.quant_conv


class Sampler:
    """A pipeline's UNet, VAE and scheduler with the run's prompts embedded once: a batch of prompts in, its
    trajectories and decoded images out. `steps` and `resolution` are the run's own (the demo caps them). `image`:
    the user's faces as the IP-Adapter sees them ([2 (uncond, cond), faces, tokens, width], identity_adapter), joined
    to every prompt's conditioning and the unconditional one, so that the PPO loss (which reads both from here and
    the trajectories) sees what sampling saw."""

    def __init__(
        self, pipe, family, prompts: list[str], cfg, steps: int, resolution: int, precision, device, image=None
    ):
        self.pipe, self.cfg, self.steps, self.precision = pipe, cfg, steps, precision
        with torch.no_grad():
            self.prompt_emb = {p: family.encode(pipe, [p], device, resolution) for p in set(prompts)}
            self.uncond = family.encode(pipe, [""], device, resolution)
        if image is not None:
            self.prompt_emb = {p: c.with_image(image[1:]) for p, c in self.prompt_emb.items()}
            self.uncond = self.uncond.with_image(image[:1])
        side = resolution // pipe.vae_scale_factor  # the autoencoder's own reduction (SD 1.5's 8, the face model's 4)
        self.shape = (pipe.unet.config.in_channels, side, side)

    def cond(self, prompts: list[str]) -> Cond:
        return Cond.cat([self.prompt_emb[p] for p in prompts])

    def batch(self, prompts: list[str], generator: torch.Generator) -> tuple[Trajectories, list]:
        cfg, pipe = self.cfg, self.pipe
        pipe.unet.eval()
        traj = sample(
            pipe.unet,
            pipe.scheduler,
            self.cond(prompts),
            self.uncond,
            prompts,
            self.steps,
            cfg.guidance_scale,
            cfg.eta,
            self.shape,
            generator,
            self.precision,
        )
        return traj, decode(pipe.vae, traj.latents[:, -1])
