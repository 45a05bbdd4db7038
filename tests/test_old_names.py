"""The names before diffusers' (issue 41) still work: settings.toml keys, CLI flags, checkpoints and demo markers
written by the old version load with the same values, and an old name used says once what it is called now."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from easyphoto_app import cli, settings
from easyphoto_app.ddpo.loop import RLRun
from easyphoto_app.demo_model import DEMO
from easyphoto_app.lora_io import save_tensors
from easyphoto_app.lora_train import FaceLoraTrainer
from easyphoto_app.model_defaults import model_defaults
from easyphoto_app.model_loading import ResolvedModel
from easyphoto_app.settings import RLConfig, TrainConfig, current_names, load_settings

# A settings.toml as the old version wrote it (every renamed key, each away from its default), and the values it must
# give under today's names. Written out by hand: a name left out of settings.RENAMED fails here.
OLD_FILE = """\
[train]
steps = 7
alpha = 3.5
lr = 0.002
grad_accum = 2
batch_size = 3
save_every = 5
validation_images = 1

[rl]
lr = 0.003
sample_batch = 2
train_batch = 4
steps = 12
guidance = 6.5

[generate]
steps = 9
cfg = 4.5

[portrait]
control_weight = 0.8
"""
NEW_VALUES = {
    "train": {
        "max_train_steps": 7,
        "lora_alpha": 3.5,
        "learning_rate": 0.002,
        "gradient_accumulation_steps": 2,
        "train_batch_size": 3,
        "checkpointing_steps": 5,
        "num_validation_images": 1,
    },
    "rl": {
        "learning_rate": 0.003,
        "sample_batch_size": 2,
        "train_batch_size": 4,
        "num_inference_steps": 12,
        "guidance_scale": 6.5,
    },
    "generate": {"num_inference_steps": 9, "guidance_scale": 4.5},
    "portrait": {"controlnet_conditioning_scale": 0.8},
}
# Each old flag: the command it is given to, the settings section it sets, its new name and a value off the default.
OLD_FLAGS = [
    ("train", "train", "--steps", "--max-train-steps", "7"),
    ("train", "train", "--alpha", "--lora-alpha", "3.5"),
    ("train", "train", "--lr", "--learning-rate", "0.002"),
    ("train", "train", "--grad-accum", "--gradient-accumulation-steps", "2"),
    ("train", "train", "--batch-size", "--train-batch-size", "3"),
    ("train", "train", "--save-every", "--checkpointing-steps", "5"),
    ("train", "train", "--validation-images", "--num-validation-images", "1"),
    ("rl", "rl", "--lr", "--learning-rate", "0.003"),
    ("rl", "rl", "--sample-batch", "--sample-batch-size", "2"),
    ("rl", "rl", "--train-batch", "--train-batch-size", "4"),
    ("rl", "rl", "--steps", "--num-inference-steps", "12"),
    ("rl", "rl", "--guidance", "--guidance-scale", "6.5"),
    ("generate", "generate", "--steps", "--num-inference-steps", "9"),
    ("generate", "generate", "--cfg", "--guidance-scale", "4.5"),
    ("portrait", "generate", "--steps", "--num-inference-steps", "9"),
    ("portrait", "generate", "--cfg", "--guidance-scale", "4.5"),
    ("portrait", "portrait", "--control-weight", "--controlnet-conditioning-scale", "0.8"),
]
REQUIRED = {"train": ["--user", "a"], "rl": ["--user", "a"], "generate": [], "portrait": ["--template", "t.jpg"]}


@pytest.fixture(autouse=True)
def fresh_notices(monkeypatch):
    """Each test starts as a new process would: no notice shown yet."""
    monkeypatch.setattr(settings, "_noticed", set())


def notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]


def test_a_settings_file_from_the_old_version_loads_with_the_same_values_under_the_new_names(tmp_path, capsys):
    (tmp_path / "settings.toml").write_text(OLD_FILE, encoding="utf-8")
    loaded = load_settings(tmp_path)
    for section, values in NEW_VALUES.items():
        assert {k: getattr(getattr(loaded, section), k) for k in values} == values, section
    said = notes(capsys)
    assert len(said) == 15 and len(set(said)) == 15  # one line for each old key
    where = tmp_path / "settings.toml"
    assert f"note: 'steps' in [train] of {where} is now 'max_train_steps'; the old name still works" in said
    load_settings(tmp_path)
    assert notes(capsys) == []  # once per process


def test_the_old_and_the_new_settings_file_give_the_same_settings(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "settings.toml").write_text(OLD_FILE, encoding="utf-8")
    lines = [
        f"[{s}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in vals.items()) for s, vals in NEW_VALUES.items()
    ]
    (new / "settings.toml").write_text("\n".join(lines), encoding="utf-8")
    a, b = load_settings(old), load_settings(new)
    for section in settings.SECTIONS:
        assert getattr(a, section) == getattr(b, section), section


def test_a_file_with_both_names_keeps_the_new_names_value(tmp_path):
    (tmp_path / "settings.toml").write_text("[generate]\ncfg = 3.0\nguidance_scale = 8.0\n", encoding="utf-8")
    assert load_settings(tmp_path).generate.guidance_scale == 8.0
    assert current_names("train", {"steps": 1, "max_train_steps": 2, "rank": 4}) == {"max_train_steps": 2, "rank": 4}


@pytest.mark.parametrize("command, section, old, new, value", OLD_FLAGS)
def test_an_old_flag_sets_what_the_new_one_sets_and_says_its_new_name_once(
    tmp_path, capsys, command, section, old, new, value
):
    def parsed(*flags):
        argv = ["--data-dir", str(tmp_path), command, *REQUIRED[command], *flags]
        return cli.make_settings(cli.build_parser().parse_args(argv))

    with_new = parsed(new, value)
    assert notes(capsys) == []
    with_old = parsed(old, value, old, value)  # given twice, said once
    assert getattr(with_old, section) == getattr(with_new, section) != getattr(load_settings(tmp_path), section)
    assert with_old.given == with_new.given  # a flag is the user's choice under either name
    assert notes(capsys) == [f"note: {old} is now {new}; the old name still works"]


def test_old_flags_stay_out_of_the_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    page = capsys.readouterr().out
    assert "--max-train-steps" in page and "--steps" not in page and "--lr " not in page


def test_a_face_lora_checkpoint_from_the_old_version_resumes_with_its_settings(tmp_path):
    old = {"steps": 9, "rank": 4, "alpha": 2.0, "lr": 3e-3, "grad_accum": 1, "batch_size": 2, "save_every": 3}
    save_tensors(tmp_path / "adapter.safetensors", {"x": torch.zeros(1)}, {"settings": old, "total": 9})
    trainer = FaceLoraTrainer.__new__(FaceLoraTrainer)  # only what adopting reads: no model loaded
    trainer.cfg, trainer.total = TrainConfig(), 0
    trainer.adopt_settings(tmp_path)
    want = dict(
        max_train_steps=9,
        rank=4,
        lora_alpha=2.0,
        learning_rate=3e-3,
        gradient_accumulation_steps=1,
        train_batch_size=2,
        checkpointing_steps=3,
    )
    assert trainer.cfg == dataclasses.replace(TrainConfig(), **want) and trainer.total == 9


def test_an_rl_checkpoint_from_the_old_version_resumes_with_its_settings(tmp_path):
    old = {"lr": 3e-3, "sample_batch": 2, "train_batch": 2, "steps": 6, "guidance": 4.0, "epochs": 3}
    save_tensors(tmp_path / "adapter.safetensors", {"x": torch.zeros(1)}, {"settings": old})
    run = RLRun.__new__(RLRun)
    run.cfg = RLConfig()
    run.adopt_settings(tmp_path)
    want = dict(learning_rate=3e-3, sample_batch_size=2, train_batch_size=2, num_inference_steps=6, guidance_scale=4.0)
    assert run.cfg == dataclasses.replace(RLConfig(), **want)  # epochs: today's, as before the rename


def test_a_demo_model_installed_by_the_old_version_keeps_its_training_defaults(tmp_path):
    marker = {"version": 4, "resolution": 128, "train_defaults": {"rank": 16, "alpha": 16.0, "lr": 5e-5, "steps": 300}}
    (tmp_path / "easyphoto_demo.json").write_text(json.dumps(marker))
    cfg = model_defaults(TrainConfig(), ResolvedModel(DEMO, "demo", tmp_path))
    assert (cfg.rank, cfg.lora_alpha, cfg.learning_rate, cfg.max_train_steps) == (16, 16.0, 5e-5, 300)
