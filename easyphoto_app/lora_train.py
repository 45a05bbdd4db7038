"""Face LoRA training: diffusers + peft + accelerate.

Speed and memory come from doing the fixed work once: the VAE latents (of each
face and its mirror image) and the caption's text embedding are computed before
the loop, after which the VAE and text encoder leave the GPU. Checkpoints are
atomic folders of safetensors (adapter, optimizer, RNG), so `--resume` after a
crash or `kill -9` continues to the same weights an uninterrupted run reaches.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from easyphoto_app.demo_model import native_resolution
from easyphoto_app.device import pick_device
from easyphoto_app.errors import UserError
from easyphoto_app.faces.likeness import scorer_or_none
from easyphoto_app.faces.prepare import MIN_PHOTOS, load_record
from easyphoto_app.families import of_pipeline
from easyphoto_app.jobs import Reporter, download_progress
from easyphoto_app.lora_adapters import ADAPTER as FACE_ADAPTER
from easyphoto_app.lora_adapters import TE_TARGETS, UNET_TARGETS, add_lora
from easyphoto_app.lora_io import complete_checkpoints, load_metadata, load_tensors, save_lora, set_aside_previous
from easyphoto_app.model_defaults import default_steps, model_defaults
from easyphoto_app.model_loading import load_pipeline, resolve_model
from easyphoto_app.precision import pick_precision, vae_in_safe_dtype
from easyphoto_app.settings import TRIGGER, Settings, TrainConfig
from easyphoto_app.trainer import Trainer
from easyphoto_app.workspace import Workspace, atomic_write_json, ensure_free_space

VALIDATION_SEEDS = (1234, 5678, 9012, 3456)


@dataclass
class TrainResult:
    path: Path | None
    message: str
    best_step: int | None = None
    final_loss: float | None = None


def face_images(ws: Workspace, user: str) -> list[Path]:
    record = load_record(ws, user)
    if record is None:
        raise UserError(
            f"User '{user}' has no prepared faces: add photos first (Photos tab or 'prepare --user {user} PHOTOS')."
        )
    crops = [ws.root / p["crop"] for p in record["photos"] if p["accepted"]]
    if len(crops) < MIN_PHOTOS:
        raise UserError(
            f"User '{user}' has {len(crops)} usable face(s); training needs at least {MIN_PHOTOS}. Add more photos."
        )
    return crops


# ----------------------------------------------------------------------------- pieces


def encode_faces(pipe, images: list[Path], resolution: int, device):
    """Latent distribution (mean, std) of each face and of its mirror image: [2N, 4, h, w] each."""
    import torch
    from PIL import Image

    arrays = []
    for path in images:
        img = Image.open(path).convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)
        arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
        arrays += [arr, arr[:, ::-1]]
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    means, stds = [], []
    with torch.no_grad(), vae_in_safe_dtype(pipe.vae) as vae:
        for chunk in pixels.split(4):
            dist = vae.encode(chunk.to(device, vae.dtype)).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


def make_optimizer(params_groups: list[dict], device: str):
    import torch

    if device == "cuda":
        try:
            import bitsandbytes as bnb

            return bnb.optim.AdamW8bit(params_groups, weight_decay=1e-2)
        except ImportError:
            pass
    return torch.optim.AdamW(params_groups, weight_decay=1e-2)


# ----------------------------------------------------------------------------- trainer


class FaceLoraTrainer(Trainer):
    CHECKPOINT, ADAPTER, UNIT, SECTION = "checkpoint", FACE_ADAPTER, "step", "train"
    FAILED = "Training failed"
    OOM_LOWER = (
        "the resolution, the rank, the batch size, or turn off text encoder training",
        "--resolution, --rank, --train-batch-size, or drop --train-text-encoder",
    )

    def __init__(self, settings: Settings, ws: Workspace, user: str, reporter: Reporter):
        self.settings, self.ws, self.user, self.reporter = settings, ws, user, reporter
        self.images = face_images(ws, user)
        self.device = pick_device(settings.app.device)
        self.model = resolve_model(
            settings.app.model, settings.data_dir, self.device, progress=download_progress(reporter)
        )
        self.cfg: TrainConfig = model_defaults(settings.train, self.model, settings.given_in("train"))
        self.resolution = native_resolution(self.model, self.cfg.resolution, training=True)
        self.total = self.cfg.max_train_steps or default_steps(len(self.images))
        self.work = ws.lora_work_dir(user)

    # -- setup
    def setup(self):
        import torch
        from accelerate import Accelerator

        from easyphoto_app.train_memory import log_estimate  # noqa: PLC0415 - start-up (torch)

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the LoRA's initial weights come from the global generator
        # Autocast and the fp16 gradient scaler are ours, not accelerate's: accelerate makes no scaler for fp16 on
        # the CPU, and the tests must run the GPU's code path there.
        self.precision = pick_precision(self.settings.app.precision, self.device)
        self.scaler = self.precision.scaler()
        weight_dtype = self.precision.dtype
        self.accelerator = Accelerator(
            gradient_accumulation_steps=cfg.gradient_accumulation_steps, cpu=self.device == "cpu"
        )
        pipe = load_pipeline(self.model, self.device, dtype=weight_dtype)
        self.family = of_pipeline(pipe)
        self.text_encoders = [getattr(pipe, name) for name in self.family.TEXT_ENCODERS]
        for part in (pipe.unet, pipe.vae, *self.text_encoders):
            part.requires_grad_(False)
        self.pipe = pipe
        if self.device == "cuda":
            pipe.vae.enable_slicing()  # one photo at a time: SDXL's autoencoder at 1024 px in fp32 is GBs a photo
            log_estimate(self.reporter, pipe, cfg, self.resolution, self.precision.dtype, len(self.images))
        self.latent_mean, self.latent_std = encode_faces(pipe, self.images, self.resolution, self.device)
        with torch.no_grad():
            self.cond = self.caption()
        pipe.vae.to("cpu")  # cached latents: the VAE is only needed again for validation images
        params = [{"params": add_lora(pipe.unet, cfg.rank, cfg.lora_alpha, UNET_TARGETS), "lr": cfg.learning_rate}]
        for encoder in self.text_encoders:
            if cfg.train_text_encoder:
                params.append(
                    {"params": add_lora(encoder, cfg.rank, cfg.lora_alpha, TE_TARGETS), "lr": cfg.learning_rate / 2}
                )
            else:
                encoder.to("cpu")
        if self.device == "cuda":
            pipe.unet.enable_gradient_checkpointing()
        self.trainable = [p for g in params for p in g["params"]]
        self.optimizer = make_optimizer(params, self.device)
        self.unet, self.optimizer = self.accelerator.prepare(pipe.unet, self.optimizer)
        from diffusers import DDPMScheduler

        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.generator = torch.Generator("cpu").manual_seed(cfg.seed)
        self.scaling = pipe.vae.config.scaling_factor
        self.step = 0
        self.validation: list[dict] = []

    def caption(self):
        """The trigger word's conditioning (the family's: SDXL adds a pooled embedding and time_ids)."""
        return self.family.encode(self.pipe, [TRIGGER], self.device, self.resolution)

    # -- one optimisation step (gradient_accumulation_steps micro-batches)
    def train_step(self) -> float:
        import torch
        import torch.nn.functional as F

        cfg, g = self.cfg, self.generator
        total_loss = 0.0
        self.unet.train()
        for _ in range(cfg.gradient_accumulation_steps):
            with self.accelerator.accumulate(self.unet):
                idx = torch.randint(0, self.latent_mean.shape[0], (cfg.train_batch_size,), generator=g)
                mean, std = self.latent_mean[idx], self.latent_std[idx]
                latents = (mean + std * torch.randn(mean.shape, generator=g).to(mean.device)) * self.scaling
                noise = torch.randn(latents.shape, generator=g).to(latents.device)
                t = torch.randint(
                    0, self.noise_scheduler.config.num_train_timesteps, (cfg.train_batch_size,), generator=g
                ).to(latents.device)
                noisy = self.noise_scheduler.add_noise(latents, noise, t)
                cond = (self.caption() if cfg.train_text_encoder else self.cond).expand(cfg.train_batch_size)
                with self.precision.autocast():
                    pred = self.unet(noisy.to(self.unet.dtype), t, **cond.unet_kwargs(self.unet.dtype)).sample
                target = (
                    noise
                    if self.noise_scheduler.config.prediction_type == "epsilon"
                    else self.noise_scheduler.get_velocity(latents, noise, t)
                )
                loss = F.mse_loss(pred.float(), target.float())
                self.accelerator.backward(self.scaler.scale(loss))
                if self.accelerator.sync_gradients:
                    self.scaler.unscale_(self.optimizer)
                    self.accelerator.clip_grad_norm_(self.trainable, 1.0)
                    self.scaler.step(self.optimizer)  # skipped, and the scale lowered, if an fp16 gradient overflowed
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                total_loss += loss.item() / cfg.gradient_accumulation_steps
        self.step += 1
        return total_loss

    # -- state (checkpoints: trainer.Trainer)
    def adapted_models(self) -> dict:
        models = {"unet": self.accelerator.unwrap_model(self.unet)}
        if self.cfg.train_text_encoder:
            models.update(zip(self.family.TEXT_ENCODERS, self.text_encoders))
        return models

    def checkpoint_number(self) -> int:
        return self.step

    def progress_state(self) -> dict:
        return {"step": self.step, "total": self.total, "validation": self.validation}

    def restore_progress(self, meta: dict, folder: Path) -> None:
        self.step, self.total, self.validation = meta["step"], meta["total"], meta["validation"]

    def adopt_settings(self, folder: Path) -> dict:
        meta = super().adopt_settings(folder)
        self.total = meta["total"]
        return meta

    # -- validation: generate with fixed seeds and score likeness
    def validate(self, scorer) -> float:
        import torch

        pipe = self.pipe
        pipe.vae.to(self.device)
        for encoder in self.text_encoders:
            encoder.to(self.device)
        unet = self.accelerator.unwrap_model(self.unet)
        unet.eval()
        images = []
        with torch.no_grad():
            for seed in VALIDATION_SEEDS[: self.cfg.num_validation_images]:
                images += pipe(
                    TRIGGER,
                    num_inference_steps=20,
                    height=self.resolution,
                    width=self.resolution,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    guidance_scale=5.0,
                ).images
        pipe.vae.to("cpu")
        for encoder in self.text_encoders if not self.cfg.train_text_encoder else ():
            encoder.to("cpu")
        rewards, info = scorer(images) if scorer else ([0.0] * len(images), {"no_face_rate": 1.0})
        score = float(sum(rewards) / len(rewards))
        self.validation.append({"step": self.step, "score": round(score, 4), **info})
        atomic_write_json(self.work / "validation.json", self.validation)
        self.reporter.metric(kind="validation", step=self.step, score=score, **info)
        return score


def _best_checkpoint(work: Path, validation: list[dict]) -> Path:
    """Highest likeness; ties (e.g. the demo model, where no face is ever found) go to the latest."""
    ckpts = {int(p.name.rsplit("-", 1)[1]): p for p in complete_checkpoints(work, "checkpoint")}
    scored = [v for v in validation if v["step"] in ckpts]
    if not scored:
        return ckpts[max(ckpts)]
    best = max(scored, key=lambda v: (v["score"], v["step"]))
    return ckpts[best["step"]]


def train(settings: Settings, ws: Workspace, user: str, reporter: Reporter, resume: bool = False) -> TrainResult:
    """A failure is reported by the caller (trainer.failure_reported, with FaceLoraTrainer's words)."""
    trainer = FaceLoraTrainer(settings, ws, user, reporter)
    ensure_free_space(ws.root, (200 if trainer.model.is_demo else 2048) * 2**20, "training checkpoints")

    scorer = scorer_or_none(ws, user)
    cfg = trainer.cfg
    reporter.log(
        f"Training a face LoRA for '{user}': {len(trainer.images)} faces, {trainer.total} steps at "
        f"{trainer.resolution}px on {trainer.device}, rank {cfg.rank}, alpha {cfg.lora_alpha:g}, learning rate "
        f"{cfg.learning_rate:g}. Base model: {trainer.model.label}",
        settings=vars(cfg),
        steps=trainer.total,
    )
    start = trainer.resume_point() if resume else None
    if not resume:  # before anything slow, so a crash now cannot resume an older run
        ckpts = trainer.checkpoints()
        validation = load_metadata(ckpts[-1] / "adapter.safetensors")["validation"] if ckpts else []
        set_aside_previous(ws.face_lora(user), ckpts, _best_checkpoint(trainer.work, validation) if ckpts else None)
    trainer.setup()
    reporter.log(f"Precision: {trainer.precision.name} ({trainer.precision.reason}).")
    if start:
        trainer.load_checkpoint(start)
        reporter.log(f"Resumed from step {trainer.step} of {trainer.total}.")
    return _loop(trainer, scorer)


def _loop(trainer: FaceLoraTrainer, scorer) -> TrainResult:
    cfg, reporter = trainer.cfg, trainer.reporter
    start_step, start = trainer.step, time.perf_counter()
    loss = math.nan
    while trainer.step < trainer.total:
        loss = trainer.train_step()
        done = trainer.step - start_step
        rate = done / max(time.perf_counter() - start, 1e-9)
        reporter.progress(
            trainer.step,
            trainer.total,
            loss=round(loss, 5),
            it_s=round(rate, 3),
            eta_s=round((trainer.total - trainer.step) / max(rate, 1e-9), 1),
        )
        at_checkpoint = trainer.step % cfg.checkpointing_steps == 0 or trainer.step == trainer.total
        if at_checkpoint:
            trainer.validate(scorer)
            trainer.save_checkpoint()
        if reporter.should_stop() and trainer.step < trainer.total:
            if not at_checkpoint:
                trainer.save_checkpoint()
            message = (
                f"Stopped at step {trainer.step} of {trainer.total}; checkpoint saved. Press Resume (or "
                f"run train --resume) to continue."
            )
            reporter.done(message, stopped=True, step=trainer.step)
            return TrainResult(None, message, final_loss=loss)
    return _finish(trainer, loss)


def _finish(trainer: FaceLoraTrainer, loss: float) -> TrainResult:
    best = _best_checkpoint(trainer.work, trainer.validation)
    state, meta = load_tensors(best / "adapter.safetensors")
    cfg = trainer.cfg
    path = save_lora(
        trainer.ws.face_lora(trainer.user),
        state,
        cfg.lora_alpha,
        {
            "ss_network_module": "networks.lora",
            "ss_network_dim": str(cfg.rank),
            "ss_network_alpha": str(cfg.lora_alpha),
            "ss_base_model_version": trainer.family.WEBUI_VERSION,
            "ss_resolution": f"({trainer.resolution}, {trainer.resolution})",
            "ss_steps": str(meta["step"]),
            "ss_num_train_images": str(len(trainer.images)),
            "easyphoto_user": trainer.user,
            "easyphoto_base_model": trainer.model.source,
            "easyphoto_trigger": TRIGGER,
            "easyphoto_kind": "face",
            "easyphoto_validation": trainer.validation,
        },
        owner=trainer.user,
        family=trainer.family,
    )
    _copy_to_webui(trainer.settings, path)
    message = (
        f"Face LoRA written to {path} (best checkpoint: step {meta['step']}). Use it in a WebUI as "
        f"<lora:{trainer.user}:1>."
    )
    trainer.reporter.done(message, path=str(path), best_step=meta["step"], loss=loss)
    return TrainResult(path, message, best_step=meta["step"], final_loss=loss)


def _copy_to_webui(settings: Settings, path: Path) -> None:
    folder = settings.app.webui_lora_dir
    if folder and Path(folder).is_dir():
        shutil.copyfile(path, Path(folder) / path.name)
