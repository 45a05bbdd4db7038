"""RL that says whether it is learning: each condition in words and as an event, silent on a healthy run."""

import json

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from easyphoto_app.ddpo.diagnose import COLLAPSE, PERSIST, Diagnostics, diversity, thumbnail

HEALTHY = {
    "epoch": 0,
    "no_face_rate": 0.25,
    "reward_mean": 0.4,
    "reward_std": 0.1,
    "updates": 8,
    "skipped_updates": 0,
    "update_norm": 1e-3,
    "lora_norm": 1.0,
    "ratio_one_frac": 0.1,
    "clipfrac": 0.3,
    "precision": "fp16",
}


@pytest.mark.parametrize(
    "change, code, words",
    [
        (
            {"no_face_rate": 1.0, "reward_mean": 0.0, "reward_std": 0.0, "update_norm": 0.0},
            "no_face",
            "No sample had a face",
        ),
        ({"reward_std": 0.0, "update_norm": 0.0}, "equal_rewards", "got the same reward (0.400)"),
        ({"skipped_updates": 8}, "skipped_updates", "skipped 8 of 8 update(s)"),
        (
            {"skipped_updates": 1, "updates": 4},
            "skipped_updates",
            "skipped 1 of 4 update(s) in the last epoch. Switch to --precision bf16",
        ),
        (
            {"update_norm": 0.0, "ratio_one_frac": 1.0},
            "not_moving",
            "100% of the PPO ratios exactly 1). Raise the learning rate (now 0.0001)",
        ),
        ({"update_norm": 5e-7}, "not_moving", "did not move"),
        ({"clipfrac": 0.95}, "clipped", "95% of the PPO ratios fell outside the clip range"),
    ],
)
def test_each_condition_is_said_once_after_it_held_for_epochs_in_a_row(change, code, words):
    d = Diagnostics(lr=1e-4)
    bad = {**HEALTHY, **change}
    assert d.epoch(bad) == []  # once is not yet a pattern
    assert d.epoch(HEALTHY) == []  # and a healthy epoch resets it
    said = [d.epoch(bad) for _ in range(PERSIST)]
    assert said[:-1] == [[]] * (PERSIST - 1) and [c for c, _ in said[-1]] == [code] and words in said[-1][0][1]
    assert d.epoch(bad) == []  # said once per run


def test_a_healthy_run_is_told_nothing_and_its_gain_is_summed_up():
    d = Diagnostics(lr=1e-4)
    assert all(d.epoch({**HEALTHY, "epoch": i}) == [] for i in range(6))
    evals = [{"epoch": 0, "reward_mean": 0.40}, {"epoch": 3, "reward_mean": 0.47}, {"epoch": 6, "reward_mean": 0.45}]
    assert d.closing(evals, 6) == (
        "RL raised the evaluated likeness from 0.400 to 0.470 (+0.070), best after 3 epoch(s).",
        [],
    )


def test_without_a_gain_the_summary_names_the_likeliest_reason_and_says_it_as_a_warning_once():
    d = Diagnostics(lr=1e-4)
    d.epoch(
        {**HEALTHY, "no_face_rate": 1.0, "reward_mean": 0.0, "reward_std": 0.0, "update_norm": 0.0}
    )  # one epoch only
    summary, due = d.closing([{"epoch": 0, "reward_mean": 0.0}, {"epoch": 1, "reward_mean": 0.0}], 1)
    assert summary.startswith("RL did not raise the evaluated likeness (it stayed at 0.000). No sample had a face")
    assert [c for c, _ in due] == ["no_face"]
    d2 = Diagnostics(lr=1e-4)
    d2.epoch(HEALTHY)
    summary, due = d2.closing([{"epoch": 0, "reward_mean": 0.5}, {"epoch": 1, "reward_mean": 0.45}], 1)
    assert "No fault showed in the figures: 1 epoch(s) may be too few" in summary and due == []
    assert Diagnostics(1e-4).closing([], 0)[0] == "No evaluation finished, so whether RL helped is not known."


def test_collapsing_is_said_once_when_the_evaluated_diversity_falls_below_half_of_its_first_value():
    d = Diagnostics(lr=1e-4)
    evals = [{"epoch": 0, "diversity": 0.2}]
    assert d.evaluated(evals) == []
    for value in (0.15, 0.101, None):  # less diverse, but not yet half; an evaluation of one sample has no figure
        evals.append({"epoch": len(evals), "diversity": value})
        assert d.evaluated(evals) == []
    evals.append({"epoch": 4, "diversity": 0.09})
    [(code, message)] = d.evaluated(evals)
    assert code == "collapsing" and "now differ 45% as much as at the start (diversity 0.090, first 0.200)" in message
    assert "lower learning rate (now 0.0001)" in message
    evals.append({"epoch": 5, "diversity": 0.05})
    assert d.evaluated(evals) == []  # said once per run
    assert Diagnostics(1e-4).evaluated([{"diversity": None}, {"diversity": 0.0}]) == []  # no first figure: no verdict


def test_diversity_is_the_mean_distance_between_samples_and_shrinks_with_them_towards_one_look():
    import photos

    looks = [thumbnail(img) for img in photos.distinct_looks(photos.astronaut()).values()]
    assert thumbnail(Image.fromarray(photos.astronaut())).shape == (32, 32, 3)
    spread = diversity(looks)
    pairs = [np.sqrt(((a - b) ** 2).mean()) for i, a in enumerate(looks) for b in looks[i + 1 :]]
    assert spread == pytest.approx(np.mean(pairs), rel=1e-5) and spread > 0.05
    one = thumbnail(Image.open(photos.insightface_image("Tom_Hanks_54745.png")))
    halfway = [0.5 * t + 0.5 * one for t in looks]  # each sample halfway to one photo
    assert diversity(halfway) == pytest.approx(spread / 2, rel=1e-4)
    assert diversity([looks[0]] * 3) == 0.0 and diversity(looks[:1]) is None


def events_of(home):
    return [json.loads(line) for line in (home / "users" / "astro" / "ddpo_weights" / "events.jsonl").open()]


def test_a_run_whose_samples_have_no_face_says_so_in_words_and_in_an_event(home_copy):
    """The demo model's random weights paint noise: the real face reward is 0 on every sample."""
    r = run_cli(
        home_copy,
        "rl",
        "--user",
        "astro",
        "--samples-per-epoch",
        "4",
        "--sample-batch-size",
        "2",
        "--num-inference-steps",
        "3",
        "--epochs",
        "2",
        "--eval-samples",
        "2",
    )
    assert r.returncode == 0, r.stderr
    warnings = [e for e in events_of(home_copy) if e["type"] == "warning"]
    assert [w["code"] for w in warnings] == ["no_face"] and "Train the face LoRA longer" in warnings[0]["message"]
    assert "warning: No sample had a face in the last 2 epoch(s)" in r.stdout
    assert "RL did not raise the evaluated likeness (it stayed at 0.000). No sample had a face" in r.stdout
    done = next(e for e in events_of(home_copy) if e["type"] == "done")
    assert "No sample had a face" in done["message"]


def run_in_process(home, monkeypatch=None, precision="fp32", **rl):
    from easyphoto_app.ddpo.job import run_rl
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    def brightness(images):  # a reward that tells every sample apart
        return [float(np.asarray(im, dtype=np.float32).mean()) / 255 for im in images], {"no_face_rate": 0.0}

    s = load_settings(home)
    s.app.precision = precision
    for key, value in {
        "samples_per_epoch": 4,
        "sample_batch_size": 2,
        "num_inference_steps": 3,
        "epochs": 3,
        "eval_samples": 2,
        "learning_rate": 3e-3,
        "clip_range": 0.2,
        **rl,
    }.items():
        setattr(s.rl, key, value)
    events = []
    run_rl(s, Workspace(home), "astro", Reporter(None, [events.append]), reward_fn=brightness)
    return (
        [e for e in events if e.get("kind") == "epoch"],
        [e for e in events if e["type"] == "warning"],
        [e for e in events if e.get("kind") == "eval"],
    )


def test_a_healthy_run_moves_its_lora_and_says_nothing(home_copy):
    epochs, warnings, evals = run_in_process(home_copy, eval_samples=4)
    assert warnings == [] and all(e["update_norm"] > 0 and e["skipped_updates"] == 0 for e in epochs)
    first, *later = [e["diversity"] for e in evals]  # each evaluation says how different its fixed-noise samples are
    assert len(later) >= 1 and first > 0.02 and all(d > COLLAPSE * first for d in later), evals


def test_a_run_whose_samples_become_one_look_is_told_it_is_collapsing(home_copy, monkeypatch):
    """Built to collapse: after the first evaluation, every decoded sample is 80% one photo (the astronaut), as the
    samples of an RL LoRA that copies one look become. Their differences shrink to a fifth."""
    import photos

    from easyphoto_app.ddpo import sampling

    real_decode, calls = sampling.decode, []
    look = Image.fromarray(photos.astronaut())

    def collapsing_decode(vae, latents):
        images = real_decode(vae, latents)
        calls.append(len(images))
        if sum(calls) <= 4:  # the first evaluation's 4 samples are the run's own
            return images
        one = np.asarray(look.resize(images[0].size), dtype=np.float32)
        return [Image.fromarray((0.2 * np.asarray(im, dtype=np.float32) + 0.8 * one).astype(np.uint8)) for im in images]

    monkeypatch.setattr(sampling, "decode", collapsing_decode)
    _, warnings, evals = run_in_process(home_copy, eval_samples=4, epochs=1)  # evaluated before and after
    first, last = evals[0]["diversity"], evals[-1]["diversity"]
    assert last == pytest.approx(0.2 * first, abs=0.01)
    assert [w["code"] for w in warnings] == ["collapsing"], warnings
    message = warnings[0]["message"]
    assert message.startswith("The samples are collapsing into one look") and f"first {first:.3f}" in message
    assert "lower learning rate (now 0.003)" in message


def test_a_learning_rate_of_0_is_told_the_lora_did_not_move(home_copy):
    epochs, warnings, _ = run_in_process(home_copy, learning_rate=0.0)
    assert all(e["update_norm"] == 0 for e in epochs)
    assert [w["code"] for w in warnings] == ["not_moving"] and "Raise the learning rate (now 0)" in warnings[0][
        "message"
    ]


def test_fp16_updates_skipped_by_the_gradient_scaler_are_counted_and_told(home_copy, monkeypatch):
    """A scale no fp16 gradient survives (as random weights or a bad step can make): every update is skipped."""
    import torch

    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: real(*a, **{**k, "init_scale": 2.0**120}))
    epochs, warnings, _ = run_in_process(home_copy, precision="fp16")
    assert all(e["skipped_updates"] == e["updates"] > 0 and e["update_norm"] == 0 for e in epochs)
    assert "skipped_updates" in [w["code"] for w in warnings]
