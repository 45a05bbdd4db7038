"""One DDIM step that also returns the log-probability of the step taken.

With eta > 0 a DDIM step is a Gaussian: x_{t-1} ~ N(mean(x_t, eps), std^2 I).
DDPO needs log p(x_{t-1} | x_t) under the current weights; it is averaged over
C, H, W (not summed), which is why DDPO's PPO clip range is as small as 1e-4.

The step is computed in float32 whatever dtype the UNet ran in. In fp16 the log-prob
is quantised at 1e-3..2e-3 (10-20x the clip range, so every PPO ratio is 1 or
clipped) and 1 - alpha loses the small-t std; float32 stays within 1e-5 of a
float64 reference over a 50-step SD1.5 schedule (tests/test_rl.py).
"""

from __future__ import annotations

import math

import torch


def _alpha(scheduler, t: torch.Tensor) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod.to(t.device)
    safe = t.clamp(min=0)
    return torch.where(t >= 0, alphas[safe], scheduler.final_alpha_cumprod.to(t.device))


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def _alphas(scheduler, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    prev_t = t - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    return _alpha(scheduler, t), _alpha(scheduler, prev_t)


def step_std(scheduler, timesteps: torch.Tensor, eta: float) -> torch.Tensor:
    """The std of each step's Gaussian. It is 0 where the step is deterministic: eta 0, or a last step that lands
    on its own alpha ("leading" spacing with steps_offset 0). Such a step has no usable log-prob: 1/std^2 would
    swamp the gradient."""
    a_t, a_prev = _alphas(scheduler, timesteps.long())
    return eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()


def ddim_step_with_logprob(
    scheduler,
    eps: torch.Tensor,
    timestep,
    sample: torch.Tensor,
    eta: float,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    compute_dtype: torch.dtype = torch.float32,
):
    """Returns (prev_sample, log_prob[B]), both in `compute_dtype` (float32 unless a test asks for float64)
    whatever the dtype of `eps` and `sample`. `timestep` is a scalar or a [B] tensor of train timesteps."""
    eps, sample = eps.to(compute_dtype), sample.to(compute_dtype)
    t = torch.as_tensor(timestep, device=sample.device).long().reshape(-1).expand(sample.shape[0])
    a_t, a_prev = (_bcast(a, sample) for a in _alphas(scheduler, t))
    if scheduler.config.prediction_type == "v_prediction":
        x0 = a_t.sqrt() * sample - (1 - a_t).sqrt() * eps
        eps = a_t.sqrt() * eps + (1 - a_t).sqrt() * sample
    else:
        x0 = (sample - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance.clamp(min=1e-20).sqrt()
    mean = a_prev.sqrt() * x0 + (1 - a_prev - std**2).clamp(min=0).sqrt() * eps
    if prev_sample is None:
        noise = torch.randn(sample.shape, generator=generator, device="cpu" if generator is None else generator.device)
        prev_sample = mean + std * noise.to(sample.device, compute_dtype)
    prev_sample = prev_sample.to(compute_dtype)
    log_prob = -((prev_sample.detach() - mean) ** 2) / (2 * std**2) - torch.log(std) - math.log(math.sqrt(2 * math.pi))
    return prev_sample, log_prob.mean(dim=tuple(range(1, log_prob.ndim)))
