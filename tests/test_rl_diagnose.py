"""RL that says whether it is learning: each condition in words and as an event, silent on a healthy run."""

import json

import numpy as np
import pytest

from conftest import run_cli
from easyphoto_app.ddpo.diagnose import PERSIST, Diagnostics

HEALTHY = {"epoch": 0, "no_face_rate": 0.25, "reward_mean": 0.4, "reward_std": 0.1, "updates": 8, "skipped_updates": 0,
           "update_norm": 1e-3, "lora_norm": 1.0, "ratio_one_frac": 0.1, "clipfrac": 0.3, "precision": "fp16"}


@pytest.mark.parametrize("change, code, words", [
    ({"no_face_rate": 1.0, "reward_mean": 0.0, "reward_std": 0.0, "update_norm": 0.0}, "no_face", "No sample had a face"),
    ({"reward_std": 0.0, "update_norm": 0.0}, "equal_rewards", "got the same reward (0.400)"),
    ({"skipped_updates": 8}, "skipped_updates", "skipped 8 of 8 update(s)"),
    ({"skipped_updates": 1, "updates": 4}, "skipped_updates", "skipped 1 of 4 update(s) in the last epoch. Switch to --precision bf16"),
    ({"update_norm": 0.0, "ratio_one_frac": 1.0}, "not_moving", "100% of the PPO ratios exactly 1). Raise the learning rate (now 0.0001)"),
    ({"update_norm": 5e-7}, "not_moving", "did not move"),
    ({"clipfrac": 0.95}, "clipped", "95% of the PPO ratios fell outside the clip range"),
])
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
    assert d.closing(evals, 6) == ("RL raised the evaluated likeness from 0.400 to 0.470 (+0.070), best after 3 epoch(s).", [])


def test_without_a_gain_the_summary_names_the_likeliest_reason_and_says_it_as_a_warning_once():
    d = Diagnostics(lr=1e-4)
    d.epoch({**HEALTHY, "no_face_rate": 1.0, "reward_mean": 0.0, "reward_std": 0.0, "update_norm": 0.0})  # one epoch only
    summary, due = d.closing([{"epoch": 0, "reward_mean": 0.0}, {"epoch": 1, "reward_mean": 0.0}], 1)
    assert summary.startswith("RL did not raise the evaluated likeness (it stayed at 0.000). No sample had a face")
    assert [c for c, _ in due] == ["no_face"]
    d2 = Diagnostics(lr=1e-4)
    d2.epoch(HEALTHY)
    summary, due = d2.closing([{"epoch": 0, "reward_mean": 0.5}, {"epoch": 1, "reward_mean": 0.45}], 1)
    assert "No fault showed in the figures: 1 epoch(s) may be too few" in summary and due == []
    assert Diagnostics(1e-4).closing([], 0)[0] == "No evaluation finished, so whether RL helped is not known."


def events_of(home):
    return [json.loads(line) for line in (home / "users" / "astro" / "ddpo_weights" / "events.jsonl").open()]


def test_a_run_whose_samples_have_no_face_says_so_in_words_and_in_an_event(home_copy):
    """The demo model's random weights paint noise: the real face reward is 0 on every sample."""
    r = run_cli(home_copy, "rl", "--user", "astro", "--samples-per-epoch", "4", "--sample-batch", "2", "--steps", "3",
                "--epochs", "2", "--eval-samples", "2")
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
    for key, value in {"samples_per_epoch": 4, "sample_batch": 2, "steps": 3, "epochs": 3, "eval_samples": 2,
                       "lr": 3e-3, "clip_range": 0.2, **rl}.items():
        setattr(s.rl, key, value)
    events = []
    run_rl(s, Workspace(home), "astro", Reporter(None, [events.append]), reward_fn=brightness)
    return [e for e in events if e.get("kind") == "epoch"], [e for e in events if e["type"] == "warning"]


def test_a_healthy_run_moves_its_lora_and_says_nothing(home_copy):
    epochs, warnings = run_in_process(home_copy)
    assert warnings == [] and all(e["update_norm"] > 0 and e["skipped_updates"] == 0 for e in epochs)


def test_a_learning_rate_of_0_is_told_the_lora_did_not_move(home_copy):
    epochs, warnings = run_in_process(home_copy, lr=0.0)
    assert all(e["update_norm"] == 0 for e in epochs)
    assert [w["code"] for w in warnings] == ["not_moving"] and "Raise the learning rate (now 0)" in warnings[0]["message"]


def test_fp16_updates_skipped_by_the_gradient_scaler_are_counted_and_told(home_copy, monkeypatch):
    """A scale no fp16 gradient survives (as random weights or a bad step can make): every update is skipped."""
    import torch

    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: real(*a, **{**k, "init_scale": 2.0 ** 120}))
    epochs, warnings = run_in_process(home_copy, precision="fp16")
    assert all(e["skipped_updates"] == e["updates"] > 0 and e["update_norm"] == 0 for e in epochs)
    assert "skipped_updates" in [w["code"] for w in warnings]
