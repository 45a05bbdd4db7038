"""Learning, seen with the real face reward (dlib) on the shipped face model (assets/face_model), on a person it
never saw: Eileen Collins, scikit-image's astronaut, held out of all its training images (its sources.json).

The other tests run on a tiny random model, where no sample has a face and nothing can be learned; these are the
ones that would go red if a LoRA stopped being applied or RL climbed the wrong way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import _private_copy, run_cli

SEEDS = 8  # fixed seeds, never used in training: 9001, 9002, ...
TRAIN_STEPS = 100


@pytest.fixture(scope="session")
def face_home(session_data, astro_photos) -> Path:
    """A data dir on the shipped face model with 'astro' prepared and a face LoRA trained (defaults, fewer steps)."""
    from easyphoto_app.demo_model import ensure_demo_model

    def build(base: Path) -> Path:
        d = base / "data"
        ensure_demo_model(d)
        (d / "settings.toml").write_text('[app]\nmodel = "demo"\n')
        r = run_cli(d, "prepare", "--user", "astro", *map(str, astro_photos))
        assert r.returncode == 0, r.stderr
        r = run_cli(
            d,
            "train",
            "--user",
            "astro",
            "--max-train-steps",
            str(TRAIN_STEPS),
            "--checkpointing-steps",
            str(TRAIN_STEPS),
        )
        assert r.returncode == 0, r.stderr
        return d

    return session_data("face-home", build)


@pytest.fixture
def face_copy(tmp_path, face_home) -> Path:
    return _private_copy(tmp_path, face_home)


@pytest.fixture(scope="module")
def pipe_and_model(face_home):
    import torch

    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import load_pipeline, resolve_model

    model = resolve_model("demo", face_home)
    return LoadedModel(load_pipeline(model, "cpu", torch.float32), model)


def big(path: Path) -> np.ndarray:
    """A 128 px sample enlarged to 512 px, as benchmarks/likeness_chain.py scores it."""
    import cv2

    from easyphoto_app.faces.images import load_rgb

    return cv2.resize(load_rgb(path), (512, 512), interpolation=cv2.INTER_CUBIC)


def generated(pipe_and_model, home: Path, user: str | None, tmp_path: Path, **changes) -> list[Path]:
    from easyphoto_app.generate import generate, with_overrides
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    cfg = with_overrides(load_settings(home).generate, num=SEEDS, seed=9001, **changes)
    result = generate(
        pipe_and_model, Workspace(home), cfg, user=user, use_rl=False, out_folder=tmp_path / (user or "base")
    )
    return result.paths


def test_the_person_of_these_tests_was_held_out_of_the_face_models_training():
    from easyphoto_app.demo_model import FACE_MODEL

    sources = json.loads((FACE_MODEL / "sources.json").read_text())
    held = {e["person"]: e["source"] for e in sources["held_out"]}
    assert "astronaut.png" in held["Eileen Collins"]
    assert not any("astronaut" in e["source"] or e["person"] == "Eileen Collins" for e in sources["train"])


def test_the_face_model_paints_faces_and_none_of_them_is_her(pipe_and_model, face_home, tmp_path):
    """The base paints faces that dlib finds (the random model's noise has none), of nobody in particular: low
    likeness to a person it never saw. Red on the tiny random model, or with the autoencoder's scale wrong."""
    from easyphoto_app.faces.likeness import scorer_for
    from easyphoto_app.workspace import Workspace

    paths = generated(pipe_and_model, face_home, None, tmp_path)
    scorer = scorer_for(Workspace(face_home), "astro")
    scores = [scorer.score(big(p)) for p in paths]
    assert sum(s.likeness is not None for s in scores) >= 6, scores
    assert float(np.mean([s.likeness or 0.0 for s in scores])) < 0.3, scores


def test_rl_with_the_face_reward_has_faces_to_learn_from_and_moves_its_lora(face_copy):
    """On the face model the real reward (dlib likeness) finds faces and differs between samples, so the
    advantages are not zero and the RL LoRA moves, with no warning. (On the random model every reward is 0 and
    nothing moves: test_rl_diagnose.py.) Red with the advantages zeroed in the PPO update."""
    from easyphoto_app.ddpo.job import run_rl
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    s = load_settings(face_copy)
    s.rl.epochs, s.rl.eval_every, s.rl.samples_per_epoch, s.rl.eval_samples = 2, 2, 8, 4
    events = []
    run_rl(s, Workspace(face_copy), "astro", Reporter(listeners=[events.append]))
    epochs = [e for e in events if e.get("type") == "metric" and e.get("kind") == "epoch"]
    rows = [
        {k: e.get(k) for k in ("no_face_rate", "reward_mean", "reward_std", "update_norm", "grad_zero_frac", "samples")}
        for e in epochs
    ]
    assert len(epochs) == 2 and all(e["no_face_rate"] < 0.5 and e["reward_std"] > 0 for e in epochs), rows
    assert all(e["update_norm"] > 0 and e["grad_zero_frac"] < 0.5 for e in epochs), epochs
    assert not [e for e in events if e.get("type") == "warning"]
