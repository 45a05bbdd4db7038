"""RL with identity strength (RLConfig.ip_scale): the IP-Adapter conditions every UNet call of sampling and of the
PPO loss alike, on the tiny SD 1.5 model with the tiny adapter (tests/tiny_ip_adapter.py)."""

from __future__ import annotations

import pytest
import torch
from test_identity_adapter import adapter_repo, cached, swap_faces  # noqa: F401 (fixtures)

from easyphoto_app.errors import UserError


def rl_run(home, model_dir, ip_scale: float):
    from easyphoto_app.ddpo.loop import RLRun
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    s = load_settings(home)
    s.app.model = str(model_dir)
    s.rl.resolution, s.rl.num_inference_steps, s.rl.ip_scale, s.rl.clip_range = 64, 3, ip_scale, 0.5
    run = RLRun(s, Workspace(home), "astro", Reporter(), reward_fn=lambda ims: ([0.0] * len(ims), {}))
    run.setup()
    return run


def samples(run):
    return run.sampler.batch([run.prompts[0]] * 2, torch.Generator().manual_seed(0))[0]


def first_ratio(run, traj) -> float:
    from easyphoto_app.ddpo.ppo import ppo_update

    opt = torch.optim.SGD(run.params, lr=0.0)
    adv = torch.tensor([1.0, -1.0])
    gen = torch.Generator().manual_seed(1)
    stats = ppo_update(run.pipe.unet, run.pipe.scheduler, traj, adv, run.sampler.uncond, opt, run.params, run.cfg, gen)
    return stats["ratio_first"]


def saved_keys(run) -> set:
    from safetensors import safe_open

    with safe_open(str(run.write_output("test").path), "pt") as fh:
        return set(fh.keys())


@pytest.mark.usefixtures("cached")
def test_rl_samples_follow_the_photos_and_the_ppo_loss_sees_what_sampling_saw(home_copy, demo_model_dir):
    bare_run = rl_run(home_copy, demo_model_dir, 0.0)
    assert bare_run.pipe.unet.encoder_hid_proj is None and samples(bare_run).cond.image is None
    bare, bare_keys = samples(bare_run).latents, saved_keys(bare_run)
    run = rl_run(home_copy, demo_model_dir, 0.8)
    traj = samples(run)
    assert traj.cond.image is not None and run.pipe.image_encoder is None
    assert sum(p.requires_grad for p in run.pipe.unet.parameters()) == len(run.params)
    assert (traj.latents - bare).abs().mean() > 1e-3
    assert abs(first_ratio(run, traj) - 1) < 1e-5  # sampling and the loss: the same conditioning
    run.pipe.set_ip_adapter_scale(0.0)  # loaded, handed the faces, at scale 0: the bare run's samples exactly
    assert torch.equal(samples(run).latents, bare)
    assert saved_keys(run) == bare_keys  # the RL LoRA never reaches the adapter's to_k_ip/to_v_ip
    swap_faces(home_copy, "astro")
    other = samples(rl_run(home_copy, demo_model_dir, 0.8)).latents
    assert (other - traj.latents).abs().mean() > 1e-3  # another face, other samples


def test_the_demo_model_and_a_missing_adapter_offline_are_refused_before_the_run(home_copy, hub_cache, demo_model_dir):
    from easyphoto_app.ddpo.loop import RLRun
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    s = load_settings(home_copy)
    s.rl.ip_scale = 0.5
    with pytest.raises(UserError, match=r"^The built-in demo model cannot use identity strength in RL "):
        RLRun(s, Workspace(home_copy), "astro", Reporter(), reward_fn=lambda ims: ([], {}))
    s.app.model = str(demo_model_dir)
    with pytest.raises(UserError, match=r"^Identity strength needs the IP-Adapter ip-adapter-plus-face_sd15 "):
        RLRun(s, Workspace(home_copy), "astro", Reporter(), reward_fn=lambda ims: ([], {}))
