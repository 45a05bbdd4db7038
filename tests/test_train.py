import json
import shutil

import numpy as np
import pytest
import torch
from conftest import kill_9_when, run_cli


def _pipe(data):
    from easyphoto_app.model_loading import load_pipeline, resolve_model

    return load_pipeline(resolve_model("demo", data), "cpu")


def _image(pipe, seed=0):
    return (
        pipe(
            "easyphoto_face, easyphoto, 1person",
            num_inference_steps=3,
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
            height=64,
            width=64,
        )
        .images[0]
        .numpy()
    )


def test_face_lora_file_has_webui_keys_true_alpha_and_metadata(trained_home):
    from safetensors import safe_open

    path = trained_home / "loras" / "astro.safetensors"
    with safe_open(str(path), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alphas = {f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert {k.rsplit(".", 2)[-2] if not k.endswith("alpha") else "alpha" for k in keys} == {
        "lora_down",
        "lora_up",
        "alpha",
    }
    assert alphas == {2.0}  # trained with --rank 4 --alpha 2: the true alpha, not the rank
    assert meta["ss_network_dim"] == "4" and meta["easyphoto_user"] == "astro" and meta["ss_steps"] == "4"
    assert meta["easyphoto_trigger"].startswith("easyphoto_face")


def test_diffusers_load_reproduces_in_memory_adapter_and_changes_output(trained_home):
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    from easyphoto_app.lora_io import load_tensors

    base = _image(_pipe(trained_home))
    loaded = _pipe(trained_home)
    loaded.load_lora_weights(str(trained_home / "loras" / "astro.safetensors"), adapter_name="astro")
    via_file = _image(loaded)

    memory = _pipe(trained_home)
    state, _ = load_tensors(trained_home / "users" / "astro" / "lora" / "checkpoint-4" / "adapter.safetensors")
    memory.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"]), adapter_name="face"
    )
    set_peft_model_state_dict(memory.unet, {k[5:]: v for k, v in state.items()}, adapter_name="face")
    in_memory = _image(memory)
    assert np.abs(via_file - in_memory).max() < 1e-4
    assert np.abs(via_file - base).max() > 1e-2


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_loss_on_a_fixed_batch_goes_down(home_copy, precision):
    """In each --precision: the UNet's weights in that dtype, the LoRA float32, fp16 with a gradient scaler."""
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.lora_train import FaceLoraTrainer
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    settings = load_settings(home_copy)
    settings.app.precision = precision
    settings.train.learning_rate, settings.train.rank, settings.train.gradient_accumulation_steps = 3e-3, 8, 1
    t = FaceLoraTrainer(settings, Workspace(home_copy), "astro", Reporter())
    t.setup()
    assert t.unet.dtype == t.precision.dtype and t.scaler.is_enabled() == (precision == "fp16")
    assert all(p.dtype == torch.float32 for p in t.trainable)
    g = torch.Generator().manual_seed(0)
    latents = t.latent_mean[:4] * t.scaling
    noise = torch.randn(latents.shape, generator=g)
    steps = torch.tensor([100, 300, 500, 700])
    noisy = t.noise_scheduler.add_noise(latents, noise, steps)

    def fixed_loss():
        with torch.no_grad(), t.precision.autocast():
            pred = t.unet(noisy.to(t.unet.dtype), steps, **t.cond.expand(4).unet_kwargs(t.unet.dtype)).sample
            return torch.nn.functional.mse_loss(pred.float(), noise).item()

    before = fixed_loss()
    for _ in range(40):
        t.train_step()
    assert fixed_loss() < before * 0.97


def _lora_tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_kill_9_then_resume_finishes_with_the_uninterrupted_weights(home_copy, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(home_copy, other)
    args = [
        "train",
        "--user",
        "astro",
        "--max-train-steps",
        "30",
        "--checkpointing-steps",
        "5",
        "--rank",
        "4",
        "--lora-alpha",
        "4",
        "--num-validation-images",
        "1",
    ]
    assert run_cli(other, *args).returncode == 0
    reference = _lora_tensors(other / "loras" / "astro.safetensors")

    (home_copy / "loras" / "astro.safetensors").unlink()
    work = home_copy / "users" / "astro" / "lora"
    kill_9_when(home_copy, args, work / "checkpoint-10")  # two checkpoints: resume must take the later one
    assert (work / "checkpoint-5").exists() and (work / "checkpoint-10").exists()
    assert not (home_copy / "loras" / "astro.safetensors").exists()  # never a half-written final file
    r = run_cli(home_copy, *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert "Resumed from step 10 of 30" in r.stdout + r.stderr
    resumed = _lora_tensors(home_copy / "loras" / "astro.safetensors")
    assert resumed.keys() == reference.keys()
    for k in reference:
        torch.testing.assert_close(resumed[k], reference[k], rtol=1e-4, atol=1e-5)


def test_train_without_prepared_faces_exits_2(data_dir):
    r = run_cli(data_dir, "train", "--user", "nobody", "--max-train-steps", "2")
    assert r.returncode == 2 and "No user 'nobody' yet: add photos first" in r.stderr and "Traceback" not in r.stderr
    (data_dir / "users" / "bob").mkdir(parents=True)  # a user whose photos were never checked
    r = run_cli(data_dir, "train", "--user", "bob", "--max-train-steps", "2")
    assert r.returncode == 2 and "'bob' has no checked photos yet" in r.stderr and "Traceback" not in r.stderr


def test_lora_of_another_user_is_not_overwritten(tmp_path):
    from easyphoto_app.errors import UserError
    from easyphoto_app.lora_io import save_lora

    state = {
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 8),
        "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(8, 2),
    }
    path = tmp_path / "Anna.safetensors"
    save_lora(path, state, 1.0, {"easyphoto_user": "Anna"}, owner="Anna")
    with pytest.raises(UserError, match="belongs to user 'Anna'"):
        save_lora(path, state, 1.0, {"easyphoto_user": "anna"}, owner="anna")


def test_a_lora_write_that_fails_halfway_keeps_the_old_lora(tmp_path, monkeypatch):
    from pathlib import Path

    from easyphoto_app.errors import UserError
    from easyphoto_app.lora_io import save_lora

    state = {
        "down_blocks.0.attentions.0.to_q.lora_A.weight": torch.ones(4, 8),
        "down_blocks.0.attentions.0.to_q.lora_B.weight": torch.ones(8, 4),
    }
    target = save_lora(tmp_path / "anna.safetensors", state, 4.0, {"easyphoto_user": "anna"}, owner="anna")
    before = target.read_bytes()
    real = Path.write_bytes

    def half_then_disk_full(self, data):
        real(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_disk_full)
    with pytest.raises(UserError, match="is full: anna.safetensors was not written"):
        save_lora(target, {k: v * 2 for k, v in state.items()}, 4.0, {"easyphoto_user": "anna"}, owner="anna")
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["anna.safetensors"]


def test_training_wiring_follows_the_flags_targets_every_attention_projection_and_halves_the_te_lr(home_copy):
    from easyphoto_app.cli import build_parser, make_settings
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.lora_train import FaceLoraTrainer
    from easyphoto_app.workspace import Workspace

    args = build_parser().parse_args(
        [
            "--data-dir",
            str(home_copy),
            "train",
            "--user",
            "astro",
            "--learning-rate",
            "3e-3",
            "--rank",
            "6",
            "--lora-alpha",
            "3",
            "--train-text-encoder",
        ]
    )
    settings = make_settings(args)
    trainer = FaceLoraTrainer(settings, Workspace(home_copy), "astro", Reporter(None))
    trainer.setup()
    groups = trainer.optimizer.param_groups
    assert [g["lr"] for g in groups] == [3e-3, 1.5e-3]

    fresh = _pipe(home_copy)
    # every attention projection of both models (what A1111/kohya face LoRAs train), each with a rank-6 LoRA
    for name, targets in (
        ("unet", ["to_q", "to_k", "to_v", "to_out.0"]),
        ("text_encoder", ["q_proj", "k_proj", "v_proj", "out_proj"]),
    ):
        expected = {
            n
            for n, m in getattr(fresh, name).named_modules()
            if isinstance(m, torch.nn.Linear) and any(n.endswith("." + t) for t in targets)
        }
        lora = {
            n.split(".lora_A")[0]
            for n, p in getattr(trainer.pipe, name).named_parameters()
            if ".lora_A.face." in n and p.shape[0] == 6
        }
        assert expected and lora == expected, f"{name}: {len(lora)} of {len(expected)} projections have a LoRA"
    ids = {id(p) for p in groups[0]["params"]}
    assert all(".face." in n for n, p in trainer.pipe.unet.named_parameters() if id(p) in ids)
    assert len(ids) == sum(1 for n, _ in trainer.pipe.unet.named_parameters() if "lora_" in n)


def test_best_checkpoint_is_the_most_alike_and_ties_go_to_the_latest(tmp_path):
    from easyphoto_app.lora_train import _best_checkpoint

    for step in (5, 10, 15):
        (tmp_path / f"checkpoint-{step}").mkdir()
    scores = [{"step": 5, "score": 0.2}, {"step": 10, "score": 0.7}, {"step": 15, "score": 0.4}]
    assert _best_checkpoint(tmp_path, scores).name == "checkpoint-10"
    assert _best_checkpoint(tmp_path, [{"step": 5, "score": 0.3}, {"step": 15, "score": 0.3}]).name == "checkpoint-15"
    assert _best_checkpoint(tmp_path, [{"step": 99, "score": 1.0}]).name == "checkpoint-15"  # a score without a folder
    assert _best_checkpoint(tmp_path, []).name == "checkpoint-15"


def test_a_resumed_trainer_takes_the_checkpoints_settings_and_continues_step_for_step(home_copy):
    """In process (the kill -9 test does it through the CLI): adapter, optimizer, random state, step and the
    settings the run began with all come back, so the next step is the one the first trainer would take."""
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.lora_train import FaceLoraTrainer
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    def trainer(**train):
        settings = load_settings(home_copy)
        for key, value in train.items():
            setattr(settings.train, key, value)
        return FaceLoraTrainer(settings, Workspace(home_copy), "astro", Reporter())

    first = trainer(
        learning_rate=3e-3, rank=4, gradient_accumulation_steps=1, max_train_steps=9, train_text_encoder=True
    )
    first.setup()
    for _ in range(2):
        first.train_step()
    first.validation = [{"step": 2, "score": 0.25}]
    folder = first.save_checkpoint()
    assert folder.name == "checkpoint-2"
    second = trainer(
        learning_rate=1e-5, rank=8, max_train_steps=50, train_text_encoder=False
    )  # today's flags lose to the checkpoint's
    second.adopt_settings(folder)
    assert (second.cfg.learning_rate, second.cfg.rank, second.cfg.train_text_encoder, second.total) == (
        3e-3,
        4,
        True,
        9,
    )
    second.setup()
    second.load_checkpoint(folder)
    assert (second.step, second.validation) == (2, [{"step": 2, "score": 0.25}])
    saved = {k: v.clone() for k, v in first.adapter_state().items()}
    assert saved.keys() == second.adapter_state().keys() and any(k.startswith("text_encoder.") for k in saved)
    assert all(torch.equal(saved[k], v) for k, v in second.adapter_state().items())
    assert first.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        second.optimizer.state_dict()["state"][0]["exp_avg"]
    )
    first.train_step()
    second.train_step()
    after = first.adapter_state()
    assert all(torch.allclose(after[k], v, atol=1e-6) for k, v in second.adapter_state().items())
    assert any(not torch.equal(after[k], saved[k]) for k in saved)  # the step did change the weights


def test_train_in_process_reports_each_step_and_ends_with_the_best_checkpoints_lora(home_copy):
    """train() itself (the CLI runs it in a child): progress per step, a checkpoint every save_every steps, the
    file from the best checkpoint, and a Stop that saves where it is."""
    from safetensors import safe_open

    from easyphoto_app.jobs import Reporter
    from easyphoto_app.lora_train import train
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    ws, events = Workspace(home_copy), []
    settings = load_settings(home_copy)
    (
        settings.train.max_train_steps,
        settings.train.checkpointing_steps,
        settings.train.rank,
        settings.train.gradient_accumulation_steps,
    ) = 3, 2, 4, 1
    result = train(settings, ws, "astro", Reporter(None, [events.append]))
    steps = [(e["step"], e["total"]) for e in events if e["type"] == "progress"]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert all(e["loss"] > 0 and e["it_s"] > 0 and e["eta_s"] >= 0 for e in events if e["type"] == "progress")
    assert sorted(p.name for p in ws.lora_work_dir("astro").iterdir() if p.name.startswith("checkpoint-")) == [
        "checkpoint-2",
        "checkpoint-3",
    ]
    done = events[-1]
    assert done["type"] == "done" and done["path"] == str(result.path) == str(ws.face_lora("astro"))
    assert done["best_step"] == result.best_step in (2, 3) and done["loss"] == result.final_loss
    assert done["message"] == (
        f"Face LoRA written to {result.path} (best checkpoint: step {result.best_step}). "
        "Use it in a WebUI as <lora:astro:1>."
    )
    with safe_open(str(result.path), framework="pt") as fh:
        meta = fh.metadata()  # kohya's plain strings
    assert meta["ss_steps"] == str(result.best_step) and meta["ss_network_dim"] == "4"

    events, stopping = [], Reporter(None)
    stopping.listeners = [events.append, lambda e: e["type"] == "progress" and stopping.request_stop()]
    stopped = train(settings, ws, "astro", stopping)
    assert stopped.path is None and events[-1]["stopped"] and events[-1]["step"] == 1
    [step] = [e for e in events if e["type"] == "progress"]
    assert stopped.final_loss == pytest.approx(step["loss"], abs=1e-5)
    assert events[-1]["message"] == (
        "Stopped at step 1 of 3; checkpoint saved. Press Resume (or run train --resume) to continue."
    )
    assert [p.name for p in ws.lora_work_dir("astro").iterdir() if p.name.startswith("checkpoint-")] == ["checkpoint-1"]


@pytest.fixture
def trainer(home_copy):
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.lora_train import FaceLoraTrainer
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    settings = load_settings(home_copy)
    settings.train.rank, settings.train.train_batch_size = 4, 2
    made = FaceLoraTrainer(settings, Workspace(home_copy), "astro", Reporter(None))
    made.setup()
    return made


def test_a_steps_loss_is_the_mean_of_its_accumulated_micro_batches(trainer, monkeypatch):
    import torch.nn.functional as F

    seen, mse = [], F.mse_loss
    monkeypatch.setattr(F, "mse_loss", lambda *a, **k: seen.append(mse(*a, **k)) or seen[-1])
    trainer.cfg.gradient_accumulation_steps = 3
    loss = trainer.train_step()
    assert len(seen) == 3 and loss == pytest.approx(sum(s.item() for s in seen) / 3, rel=1e-6)


def test_training_latents_are_drawn_from_each_faces_vae_posterior(trainer, monkeypatch):
    """mean + std * noise, scaled: what the VAE says the face's latent could be, not only its mean."""
    latents = []
    add_noise = trainer.noise_scheduler.add_noise
    monkeypatch.setattr(trainer.noise_scheduler, "add_noise", lambda x, *a: latents.append(x) or add_noise(x, *a))
    trainer.latent_mean = torch.full_like(trainer.latent_mean, 0.5)
    trainer.latent_std = torch.full_like(trainer.latent_std, 2.0)
    trainer.train_step()
    z = (latents[0] / trainer.scaling - 0.5) / 2.0  # standard normal if drawn right
    assert abs(z.mean().item()) < 0.2 and 0.8 < z.std().item() < 1.2 and z.abs().max().item() < 6


@pytest.mark.parametrize(
    "error, message, refused, code",
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
            "Out of memory. Lower the resolution, the rank, the batch size, or turn off text encoder training, "
            "or close other "
            "programs using the GPU, then try again.",
            None,
            2,
        ),
        ("refusal", "The faces folder is unreadable.", True, 2),
        (RuntimeError("cuDNN error"), "Training failed: RuntimeError: cuDNN error", None, 1),
    ],
)
def test_a_failed_training_says_why_once_in_its_last_event(
    home_copy, monkeypatch, capsys, error, message, refused, code
):
    from easyphoto_app.cli import main
    from easyphoto_app.errors import UserError
    from easyphoto_app.lora_train import FaceLoraTrainer
    from easyphoto_app.workspace import Workspace

    error = UserError(message) if error == "refusal" else error

    def fails(self):
        raise error

    monkeypatch.setattr(FaceLoraTrainer, "train_step", fails)
    ws = Workspace(home_copy)
    for old in ws.lora_work_dir("astro").glob("checkpoint-*"):  # so that --resume has nothing to resume from
        shutil.rmtree(old)
    path = ws.job_events("train", "astro")
    before = path.stat().st_size if path.exists() else 0  # the events of the run that trained astro
    assert main(["--data-dir", str(home_copy), "train", "--user", "astro", "--resume"]) == code
    events = [json.loads(line) for line in path.read_bytes()[before:].decode().splitlines()]
    logs = [e["message"] for e in events if e["type"] == "log"]
    assert "No checkpoint to resume from; starting at step 0." in logs
    assert [e["type"] for e in events].count("failed") == 1
    assert events[-1]["type"] == "failed" and events[-1]["message"] == message and events[-1].get("refused") == refused
    if code == 2:  # the CLI's words name its flags
        assert (
            capsys.readouterr().err
            == "error: "
            + (
                "Out of memory. Lower --resolution, --rank, --train-batch-size, or drop "
                "--train-text-encoder, or close other programs using the GPU, then try again."
                if refused is None
                else message
            )
            + "\n"
        )


def on_the_trainers_clock(monkeypatch, trainer) -> None:
    """lora_train reads the time from the trainer's clock, which only its steps move: rates are exact."""
    from types import SimpleNamespace

    from easyphoto_app import lora_train

    monkeypatch.setattr(lora_train, "time", SimpleNamespace(perf_counter=lambda: trainer.clock[0]))


class CountingTrainer:
    """What _loop drives, without a model: a step takes 10 ms and its loss is 0.5 / step."""

    def __init__(self, total, save_every, stop_at=None):
        from types import SimpleNamespace

        from easyphoto_app.jobs import Reporter

        self.cfg, self.step, self.total, self.stop_at = (
            SimpleNamespace(checkpointing_steps=save_every),
            0,
            total,
            stop_at,
        )
        self.clock = [0.0]  # seconds on the clock the loop reads (see on_the_trainers_clock)
        self.events, self.saved, self.validated = [], [], []
        self.reporter = Reporter(None, [self.events.append])

    def train_step(self):
        self.clock[0] += 0.01
        self.step += 1
        if self.step == self.stop_at:
            self.reporter.request_stop()
        return 0.5 / self.step

    def validate(self, scorer):
        self.validated.append((self.step, scorer))

    def save_checkpoint(self):
        self.saved.append(self.step)


def test_the_loop_reports_each_step_validates_and_saves_every_save_every_and_at_the_end(monkeypatch):
    from easyphoto_app import lora_train

    monkeypatch.setattr(lora_train, "_finish", lambda trainer, loss: ("finished", trainer.step, loss))
    trainer = CountingTrainer(total=5, save_every=2)
    on_the_trainers_clock(monkeypatch, trainer)
    assert lora_train._loop(trainer, "scorer") == ("finished", 5, 0.1)
    progress = [e for e in trainer.events if e["type"] == "progress"]
    assert [(e["step"], e["total"], e["loss"]) for e in progress] == [(s, 5, round(0.5 / s, 5)) for s in range(1, 6)]
    for e in progress:
        assert e["it_s"] == pytest.approx(100)  # 10 ms a step
        assert e["eta_s"] == pytest.approx((5 - e["step"]) / 100, abs=0.06)
    assert trainer.saved == [2, 4, 5] and trainer.validated == [(2, "scorer"), (4, "scorer"), (5, "scorer")]


@pytest.mark.parametrize("stop_at, saved", [(3, [2, 3]), (4, [2, 4])])
def test_a_stop_saves_where_it_is_once_and_returns_without_a_lora(stop_at, saved):
    from easyphoto_app.lora_train import _loop

    trainer = CountingTrainer(total=6, save_every=2, stop_at=stop_at)
    result = _loop(trainer, None)
    assert trainer.saved == saved and result.path is None and result.final_loss == 0.5 / stop_at
    message = f"Stopped at step {stop_at} of 6; checkpoint saved. Press Resume (or run train --resume) to continue."
    assert result.message == message
    last = trainer.events[-1]
    assert (last["type"], last["message"], last["stopped"], last["step"]) == ("done", message, True, stop_at)


def test_the_lora_comes_from_the_best_checkpoint_with_kohyas_metadata(trainer):
    from safetensors import safe_open

    from easyphoto_app.lora_train import _finish

    trainer.save_checkpoint()  # step 0
    trainer.train_step()
    trainer.save_checkpoint()  # step 1, the best
    trainer.validation = [{"step": 0, "score": 0.2}, {"step": 1, "score": 0.6}]
    result = _finish(trainer, 0.25)
    assert result.path == trainer.ws.face_lora("astro") and result.best_step == 1 and result.final_loss == 0.25
    with safe_open(str(result.path), framework="pt") as fh:
        meta = fh.metadata()
    assert {
        k: meta[k]
        for k in (
            "ss_network_module",
            "ss_network_dim",
            "ss_steps",
            "ss_base_model_version",
            "ss_resolution",
            "easyphoto_user",
            "easyphoto_kind",
        )
    } == {
        "ss_network_module": "networks.lora",
        "ss_network_dim": "4",
        "ss_steps": "1",
        "ss_base_model_version": "sd_v1",
        "ss_resolution": f"({trainer.resolution}, {trainer.resolution})",
        "easyphoto_user": "astro",
        "easyphoto_kind": "face",
    }
    assert (
        meta["ss_num_train_images"] == str(len(trainer.images))
        and float(meta["ss_network_alpha"]) == trainer.cfg.lora_alpha
    )


def test_validation_without_a_face_recognizer_scores_0_and_says_no_face_was_checked(trainer, monkeypatch):
    from types import SimpleNamespace

    from PIL import Image

    drawn = SimpleNamespace(images=[Image.new("RGB", (64, 64))])  # what is drawn is not the point here
    monkeypatch.setattr(type(trainer.pipe), "__call__", lambda self, *a, **k: drawn)
    trainer.cfg.num_validation_images = 2
    assert trainer.validate(None) == 0.0
    assert trainer.validation[-1] == {"step": 0, "score": 0.0, "no_face_rate": 1.0}
    assert json.loads((trainer.work / "validation.json").read_text()) == trainer.validation


def test_faces_reach_the_vae_as_minus_1_to_1_with_their_mirror_images(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from PIL import Image

    from easyphoto_app.lora_train import encode_faces

    left_white = np.zeros((8, 8, 3), np.uint8)
    left_white[:, :4] = 255
    Image.fromarray(left_white).save(tmp_path / "face.png")
    seen = []

    def encode(pixels):
        seen.append(pixels)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=pixels[:, :1], std=pixels[:, :1].abs()))

    vae = SimpleNamespace(encode=encode, dtype=torch.float32, config={})
    encode_faces(SimpleNamespace(vae=vae), [tmp_path / "face.png"], 8, "cpu")
    [pixels] = seen
    assert pixels.shape == (2, 3, 8, 8)
    assert pixels[0, :, :, :4].eq(1).all() and pixels[0, :, :, 4:].eq(-1).all()
    assert pixels[1].equal(pixels[0].flip(-1))  # the mirror image: twice the faces for free


def test_the_default_length_is_200_steps_a_face_up_to_800():
    from easyphoto_app.model_defaults import default_steps

    assert [default_steps(n) for n in (1, 3, 4, 5, 20)] == [200, 600, 800, 800, 800]


def test_the_demo_models_own_training_defaults_apply_unless_the_user_set_a_value(tmp_path):
    """The face model's marker names a rank, alpha, rate and step count that keep its faces; SD 1.5's (for every
    other model) do not apply to it, and a value set by the user wins over both."""
    import json

    from easyphoto_app.demo_model import DEMO, FACE_MODEL
    from easyphoto_app.model_defaults import model_defaults
    from easyphoto_app.model_loading import ResolvedModel
    from easyphoto_app.settings import TrainConfig

    own = json.loads((FACE_MODEL / "easyphoto_demo.json").read_text())["train_defaults"]
    demo = ResolvedModel(DEMO, "demo", FACE_MODEL)
    cfg = model_defaults(TrainConfig(), demo)
    assert {k: getattr(cfg, k) for k in own} == own and own["rank"] != TrainConfig().rank
    assert model_defaults(TrainConfig(rank=4, max_train_steps=7), demo).rank == 4
    assert model_defaults(TrainConfig(rank=4, max_train_steps=7), demo).max_train_steps == 7
    assert model_defaults(TrainConfig(rank=4), demo).learning_rate == own["learning_rate"]
    assert model_defaults(TrainConfig(), ResolvedModel("dir", str(FACE_MODEL), FACE_MODEL)) == TrainConfig()


def test_a_flag_equal_to_sd15s_default_still_wins_over_the_demo_models_own(tmp_path):
    """`train --lr 1e-4` on the demo trains at 1e-4: a flag is the user's choice even when it equals SD 1.5's default
    (it used to be taken for "unset" and replaced by the demo's 5e-5). The training panel shows the demo's values
    also for a model that is not downloaded, since offline the job falls back to the demo."""
    from easyphoto_app.cli import build_parser, make_settings
    from easyphoto_app.demo_model import DEMO, FACE_MODEL
    from easyphoto_app.model_defaults import model_defaults, panel_defaults
    from easyphoto_app.model_loading import ResolvedModel
    from easyphoto_app.settings import TrainConfig

    demo = ResolvedModel(DEMO, "demo", FACE_MODEL)
    args = build_parser().parse_args(
        [
            "--data-dir",
            str(tmp_path),
            "--model",
            "demo",
            "train",
            "--user",
            "u",
            "--learning-rate",
            str(TrainConfig().learning_rate),
        ]
    )
    settings = make_settings(args)
    cfg = model_defaults(settings.train, demo, settings.given_in("train"))
    assert cfg.learning_rate == TrainConfig().learning_rate and cfg.rank != TrainConfig().rank
    assert panel_defaults(settings).rank == cfg.rank
    settings.app.model = "some/other-model"  # not downloaded: a job started now would fall back to the demo
    assert panel_defaults(settings).rank == cfg.rank


def test_a_new_run_keeps_the_last_lora_and_one_checkpoint_until_it_replaces_them(home_copy):
    """A second Start (not Resume) used to delete the earlier run's checkpoints: now its LoRA stays beside the new
    one as astro.prev.safetensors, and one of its checkpoints moves to previous/."""
    lora, work = home_copy / "loras" / "astro.safetensors", home_copy / "users" / "astro" / "lora"
    before, old = lora.read_bytes(), {p.name for p in work.glob("checkpoint-*")}
    r = run_cli(
        home_copy, "train", "--user", "astro", "--max-train-steps", "2", "--checkpointing-steps", "2", "--rank", "4"
    )
    assert r.returncode == 0, r.stderr
    assert (home_copy / "loras" / "astro.prev.safetensors").read_bytes() == before and lora.read_bytes() != before
    kept = [p.name for p in (work / "previous").iterdir()]
    assert len(kept) == 1 and kept[0] in old and (work / "previous" / kept[0] / "adapter.safetensors").exists()
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-2"]


def test_the_checkpoint_kept_from_a_replaced_run_is_the_one_asked_for(tmp_path):
    from easyphoto_app.lora_io import previous_lora, set_aside_previous

    ckpts = [tmp_path / f"checkpoint-{n}" for n in (2, 4, 6)]
    for c in ckpts:
        c.mkdir()
    set_aside_previous(tmp_path / "absent.safetensors", ckpts, keep=ckpts[1])
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["previous"]
    assert [p.name for p in (tmp_path / "previous").iterdir()] == ["checkpoint-4"]
    assert not previous_lora(tmp_path / "absent.safetensors").exists()
