"""The RL loop's units alone, each on a tiny model or plain data: sampling, rewards, evaluation, the PPO loss and the
run's sample files. (The whole loop: test_rl.py; the processes' exchange: test_parallel.py.) Fast."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from accelerate import PartialState
from diffusers import AutoencoderKL, DDIMScheduler
from PIL import Image

from easyphoto_app.ddpo import evaluation, ppo, sampling
from easyphoto_app.ddpo.ddim_logprob import ddim_step_with_logprob
from easyphoto_app.ddpo.output import save_samples
from easyphoto_app.ddpo.rewards import Rewards, advantages, merge_rewards
from easyphoto_app.ddpo.stat_tracking import PerPromptStatTracker
from easyphoto_app.ddpo.sync import ProcessSync
from easyphoto_app.families.conditioning import Cond
from easyphoto_app.precision import FP32
from easyphoto_app.settings import RLConfig


class _Eps(torch.nn.Module):
    """eps = 0.5 x + proj(prompt) per latent channel: a UNet's call and output in a few weights."""

    config = SimpleNamespace(in_channels=4)

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 4)

    def forward(self, x, t, encoder_hidden_states):
        return SimpleNamespace(sample=0.5 * x + self.proj(encoder_hidden_states.mean(1))[:, :, None, None])


def _scheduler():
    return DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _sampler(steps: int = 4, resolution: int = 8) -> sampling.Sampler:
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(8,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
    )  # one block: no reduction
    pipe = SimpleNamespace(unet=_Eps(), vae=vae, scheduler=_scheduler(), vae_scale_factor=1)
    texts = {p: torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(i)) for i, p in enumerate("ab ")}
    family = SimpleNamespace(encode=lambda pipe, prompts, device, res: Cond(texts[prompts[0] or " "]))
    return sampling.Sampler(pipe, family, ["a", "b"], RLConfig(), steps, resolution, FP32, "cpu")


def test_a_sample_batch_keeps_each_steps_latents_and_logprob_and_decodes_the_last():
    sampler = _sampler()
    assert sampler.shape == (4, 8, 8)
    traj, images = sampler.batch(["a", "b", "a"], torch.Generator().manual_seed(0))
    assert traj.latents.shape == (3, 5, 4, 8, 8) and traj.log_probs.shape == (3, 4) and traj.prompts == ["a", "b", "a"]
    assert [im.size for im in images] == [(8, 8)] * 3
    decoded = sampling.decode(sampler.pipe.vae, traj.latents[:, -1])
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, decoded))
    cfg, cond = sampler.cfg, sampler.cond(traj.prompts)
    for i, t in enumerate(traj.timesteps):  # each stored log-prob is that of the step the sampler took
        with torch.no_grad():
            eps = sampling.guided_eps(
                sampler.pipe.unet, traj.latents[:, i], t, cond, sampler.uncond, cfg.guidance_scale
            )
        _, lp = ddim_step_with_logprob(
            sampler.pipe.scheduler, eps, t, traj.latents[:, i], cfg.eta, prev_sample=traj.latents[:, i + 1]
        )
        torch.testing.assert_close(lp, traj.log_probs[:, i])
    again, _ = sampler.batch(["a", "b", "a"], torch.Generator().manual_seed(0))
    assert torch.equal(again.latents, traj.latents)  # the generator decides the noise
    assert not torch.equal(traj.latents[0, -1], traj.latents[2, -1])  # one prompt, two noises
    joined = sampling.Trajectories.join([traj, again])
    assert joined.prompts == ["a", "b", "a"] * 2 and torch.equal(joined.latents[3:], again.latents)
    assert torch.equal(joined.cond.hidden, torch.cat([cond.hidden, cond.hidden]))


@pytest.mark.parametrize("background", [False, True])
def test_rewards_are_collected_in_order_with_their_info_weighted_by_batch(background):
    rewards = Rewards(
        lambda images: ([float(len(images) * 10 + i) for i in range(len(images))], {"rate": len(images)}), background
    )
    rewards.submit([None] * 3)
    rewards.submit([None])
    assert rewards.collect() == ([30.0, 31.0, 32.0, 10.0], {"rate": (3 * 3 + 1 * 1) / 4})
    rewards.submit([None])
    rewards.discard()
    assert rewards.collect() == ([], {})  # nothing left from an interrupted epoch
    rewards.close()
    assert merge_rewards([([1.0], {"a": 1.0}), ([2.0, 3.0], {})]) == ([1.0, 2.0, 3.0], {"a": 1 / 3})


def test_advantages_are_normalised_over_every_process_and_each_keeps_its_share():
    tracker = PerPromptStatTracker(32, 2)  # each prompt normalised by its own rewards
    rewards = torch.tensor([1.0, 3.0, 10.0, 30.0])
    second = advantages(tracker, ["a", "b", "a", "b"], rewards, slice(2, 4))
    assert second.tolist() == pytest.approx([1.0, 1.0], abs=1e-4)
    whole = advantages(PerPromptStatTracker(32, 2), ["a", "b", "a", "b"], rewards, slice(0, 4))
    assert whole.tolist() == pytest.approx([-1.0, -1.0, 1.0, 1.0], abs=1e-4)


def test_eval_prompts_are_the_first_ones_cycled_to_a_multiple_of_the_processes():
    assert evaluation.eval_prompts(["a", "b", "c"], 5, 1) == ["a", "b", "c", "a", "b"]
    assert evaluation.eval_prompts(["a", "b", "c"], 5, 2) == ["a", "b", "c", "a", "b", "c"]
    assert evaluation.eval_prompts(["a"], 0, 1) == ["a"]


class _NoiseSampler:
    """Draws grey 'images' whose shade is the generator's first number: the noise an evaluation batch was given."""

    cfg = SimpleNamespace(sample_batch_size=2)

    def batch(self, prompts, generator):
        shade = int(torch.randint(0, 256, (1,), generator=generator))
        return None, [Image.new("RGB", (4, 4), (shade,) * 3) for _ in prompts]


def test_an_evaluation_has_the_same_noise_each_time_and_each_place_in_the_list_its_own():
    """The noise of a batch depends on its place in the fixed prompt list, not on the process that samples it: rank 1
    of 2 draws what one process draws for the list's second half."""
    said, timed, scored = [], [], []

    def timing():
        timed.append(1)
        return torch.no_grad()

    def reward(images):
        scored.append(float(np.asarray(images[0]).mean()))
        return [scored[-1]] * len(images), {}

    def run(state):
        return evaluation.evaluate(
            _NoiseSampler(), reward, ProcessSync(state), ["a", "b", "c", "d"], 5, timing, lambda *a: said.append(a)
        )

    one = PartialState(cpu=True)
    first = run(one)
    assert run(one) == first and first["samples"] == 4 and scored[:2] == scored[2:4]
    assert said == [(2, 4), (4, 4)] * 2 and len(timed) == 4
    assert scored[0] != scored[1] and first["diversity"] > 0  # the two batches had different noise
    assert first["reward_mean"] == pytest.approx(sum(scored[:2]) / 2)
    second = run(SimpleNamespace(process_index=1, num_processes=2, is_main_process=False, device="cpu"))
    assert second["samples"] == 2 and scored[-1] == scored[1] and said[-1] == (2, 2)


def test_the_clipped_loss_of_timesteps_together_is_the_mean_of_each_alone_and_its_ratio_1_at_the_sampled_weights():
    torch.manual_seed(0)
    model, scheduler = _Eps(), _scheduler()
    gen = torch.Generator().manual_seed(0)
    cond, uncond = Cond(torch.randn(3, 3, 8, generator=gen)), Cond(torch.zeros(1, 3, 8))
    traj = sampling.sample(model, scheduler, cond, uncond, ["a"] * 3, 4, 5.0, 1.0, (4, 2, 2), gen)
    cfg, idx, adv = RLConfig(clip_range=0.2), torch.tensor([2, 0]), torch.tensor([1.0, -0.5])
    loss, ratio, kl = ppo.calculate_loss(model, scheduler, traj, idx, torch.tensor([0, 1]), adv, uncond, cfg)
    assert torch.allclose(ratio, torch.ones(4), atol=1e-5) and kl < 1e-9  # the log-probs recomputed are sampling's
    assert loss.item() == pytest.approx(-adv.mean().item(), abs=1e-5)
    with torch.no_grad():
        model.proj.bias += 0.05  # other weights: the ratios move
    together, _, _ = ppo.calculate_loss(model, scheduler, traj, idx, torch.tensor([1, 3]), adv, uncond, cfg)
    alone = [ppo.calculate_loss(model, scheduler, traj, idx, torch.tensor([i]), adv, uncond, cfg)[0] for i in (1, 3)]
    assert together.item() != pytest.approx(loss.item(), abs=1e-4)
    assert together.item() == pytest.approx(sum(a.item() for a in alone) / 2, abs=1e-6)


def test_an_epochs_first_samples_are_kept_with_their_rewards(tmp_path):
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(10)]
    save_samples(tmp_path / "samples", images, [i / 3 for i in range(10)])
    files = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert files == [f"latest-{i}.png" for i in range(8)]
    listed = json.loads((tmp_path / "samples" / "latest.json").read_text())
    assert listed[7] == {"file": "latest-7.png", "reward": 2.3333} and len(listed) == 8
    assert Image.open(tmp_path / "samples" / "latest-5.png").getpixel((0, 0)) == (5, 0, 0)


def test_the_rl_benchmark_compares_equal_work_only():
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location("bench_ddpo", ROOT / "benchmarks" / "ddpo.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    same = bench.work({(128, 128)}, 10, 4, 1, samples_per_epoch=8)
    assert same == {
        "resolution": "128x128",
        "ddim_steps": 10,
        "sample_batch": 4,
        "train_batch": 1,
        "samples_per_epoch": 8,
    }
    side = {"work": same, "s_per_epoch": 4.0, "sample_per_s": 2.0, "train_per_s": 1.0, "peak_rss_mb": 700.0}
    result = {"ours": side, "trl_ddpo": {**side, "s_per_epoch": 9.0, "peak_rss_mb": 800.0}}
    bench._compare(result, "ours")
    assert (result["epoch_speedup"], result["peak_rss_ratio"]) == (2.25, 0.875)
    result["trl_ddpo"]["work"] = bench.work({(64, 64)}, 10, 4, 1, samples_per_epoch=8)
    with pytest.raises(SystemExit, match=r"^Refused: the two sides did different work \(ours .*'128x128'"):
        bench._compare(result, "ours")
