"""The RL run: epochs of sample -> reward -> PPO update, under a time budget, always ending with a file. It only
orchestrates, in the shape of trl's DDPOTrainer: sampling.py (`_generate_samples`), rewards.py (`compute_rewards`),
ppo.py (`_train_batched_samples`), evaluation.py, sync.py (the processes of a data-parallel run), output.py; the
settings are one RLConfig. Whatever ends the run - the budget, the epoch count, Stop, an error after the first
evaluation - `loras/ddpo_<id>.safetensors` is written from the best evaluated weights (evaluation.py says why).
The face LoRA is loaded read-only and its hash is checked after.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import torch
from accelerate import PartialState
from diffusers import DDIMScheduler

from easyphoto_app.ddpo import evaluation, identity
from easyphoto_app.ddpo.budget import Budget
from easyphoto_app.ddpo.diagnose import Diagnostics
from easyphoto_app.ddpo.output import RLResult, epoch_row, save_samples, write_rl_lora
from easyphoto_app.ddpo.ppo import RL_ADAPTER, add_rl_lora, lora_change, ppo_update
from easyphoto_app.ddpo.rewards import Rewards, advantages
from easyphoto_app.ddpo.sampling import Sampler, Trajectories, drop_vae_encoder
from easyphoto_app.ddpo.stat_tracking import PerPromptStatTracker
from easyphoto_app.ddpo.sync import ProcessSync
from easyphoto_app.demo_model import DEMO_RL_STEPS, native_resolution
from easyphoto_app.device import pick_device
from easyphoto_app.errors import UserError
from easyphoto_app.faces.likeness import scorer_for
from easyphoto_app.families import of_pipeline
from easyphoto_app.jobs import Reporter, download_progress
from easyphoto_app.lora_adapters import ADAPTER as FACE_ADAPTER
from easyphoto_app.lora_io import load_tensors
from easyphoto_app.model_defaults import model_defaults
from easyphoto_app.model_loading import load_pipeline, resolve_model
from easyphoto_app.precision import pick_rl_precision
from easyphoto_app.settings import ASSETS, TRIGGER, RLConfig, Settings
from easyphoto_app.trainer import Trainer
from easyphoto_app.workspace import Workspace


def load_prompts() -> list[str]:
    path = ASSETS / "rl_prompts.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    return [line for line in lines if line and not line.startswith("#")] or [TRIGGER]


def drop_encoders(pipe, family) -> None:
    """Once the prompts are embedded, RL needs the UNet and the VAE's decoder only: the text encoders (SD 1.5's
    123M weights, SDXL's 817M), their tokenizers and the VAE's encoder (34M) would otherwise stay in memory for the
    whole run."""
    tokenizers = [name.replace("text_encoder", "tokenizer") for name in family.TEXT_ENCODERS]
    pipe.register_modules(**dict.fromkeys([*family.TEXT_ENCODERS, *tokenizers]))
    drop_vae_encoder(pipe.vae)


class RLRun(Trainer):
    CHECKPOINT, ADAPTER, UNIT, SECTION = "epoch", RL_ADAPTER, "epoch", "rl"
    KEEP_ON_RESUME = frozenset({"max_hours", "epochs"})  # the budget and epoch count may be changed when resuming
    FAILED = "RL stopped by an error"
    OOM_LOWER = (
        "samples per epoch, sample batch, resolution or steps",
        "--samples-per-epoch, --sample-batch-size, --resolution or --num-inference-steps",
    )

    def __init__(self, settings: Settings, ws: Workspace, user: str, reporter: Reporter, reward_fn=None):
        self.settings, self.ws, self.user, self.reporter = settings, ws, user, reporter
        if settings.rl.eta <= 0:
            raise UserError(
                "RL needs eta > 0: with eta 0 the sampler is deterministic and DDPO has nothing to learn from."
            )
        self.face_lora = ws.require_face_lora(user)
        if reward_fn is None:
            reward_fn = scorer_for(ws, user)  # raises a clear UserError without a reference face
        self.device = pick_device(settings.app.device)
        self.rewards = Rewards(reward_fn, background=self.device != "cpu")
        self.sync = ProcessSync(PartialState(cpu=self.device == "cpu"))  # one process unless launched with several
        self.model = resolve_model(
            settings.app.model, settings.data_dir, self.device, progress=download_progress(reporter)
        )
        self.cfg: RLConfig = model_defaults(settings.rl, self.model, settings.given_in("rl"))
        self.resolution = native_resolution(self.model, self.cfg.resolution, training=True)
        steps = self.cfg.num_inference_steps
        self.steps = min(steps, DEMO_RL_STEPS) if self.model.is_demo else steps
        self.work = ws.ddpo_dir(user)
        if self.cfg.ip_scale > 0:
            identity.require_adapter(self.model, download_progress(reporter, what="the identity adapter"))
        self.prompts = load_prompts()
        self.budget = Budget(self.cfg.max_hours)  # counted from here: loading the model is part of the run
        self.diagnostics = Diagnostics(self.cfg.learning_rate)

    # ------------------------------------------------------------------ setup
    def setup(self):
        torch.manual_seed(self.cfg.seed)
        self.precision = pick_rl_precision(self.settings.app.precision, self.device)
        self.dtype = self.precision.dtype
        self.scaler = self.precision.scaler()
        pipe = load_pipeline(self.model, self.device, dtype=self.dtype)
        pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        self.family = family = of_pipeline(pipe)
        for part in (pipe.unet, pipe.vae, *(getattr(pipe, name) for name in family.TEXT_ENCODERS)):
            part.requires_grad_(False)
        # The face LoRA is frozen, so it is fused into the in-memory weights (its file is only read): the
        # UNet then carries one live adapter, as fast as a bare one, and it can never enter the optimizer
        # (set_adapters would make a stacked face adapter trainable again, docs/design.md, pitfall 3).
        pipe.load_lora_weights(str(self.face_lora), adapter_name=FACE_ADAPTER)
        pipe.fuse_lora(adapter_names=[FACE_ADAPTER])
        pipe.unload_lora_weights()
        self.params = add_rl_lora(pipe.unet, self.cfg.rank)
        # After the RL LoRA: the adapter's image projection has to_q/k/v/out layers that its targets would take
        image = identity.face_embeds(self, pipe) if self.cfg.ip_scale > 0 else None
        if self.device == "cuda":  # the saving that ddpo.memory's estimate counts
            pipe.unet.enable_gradient_checkpointing()
        self.pipe = pipe
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.learning_rate, weight_decay=1e-4)
        self.local_samples = -(-self.cfg.samples_per_epoch // self.sync.world)  # each process samples its share
        self.sampler = Sampler(
            pipe, family, self.prompts, self.cfg, self.steps, self.resolution, self.precision, self.device, image
        )
        drop_encoders(pipe, family)
        self.generator = torch.Generator("cpu")
        self.rng = random.Random()
        self.tracker = PerPromptStatTracker(32, 16)
        self.epoch, self.best_epoch, self.best_reward, self.history, self.evals = 0, -1, float("-inf"), [], []
        self.best_state = self.adapter_state()  # the untrained adapter: a file exists even if epoch 0 never ends

    def adapter_state(self) -> dict:
        return {k: v.clone() for k, v in super().adapter_state().items()}  # a copy: best_state must not follow training

    # ------------------------------------------------------------------ checkpoints (trainer.Trainer)
    def adapted_models(self) -> dict:
        return {"unet": self.pipe.unet}

    def checkpoint_number(self) -> int:
        return self.epoch

    def progress_state(self) -> dict:
        return {
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_reward": self.best_reward,
            "history": self.history,
            "evals": self.evals,
            "tracker": self.tracker.state(),
        }

    def extra_files(self) -> dict:
        return {"best.safetensors": (self.best_state, {"epoch": self.best_epoch, "reward": self.best_reward})}

    def save_checkpoint(self) -> Path:
        folder = super().save_checkpoint()
        for old in self.checkpoints()[: -max(1, self.cfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)
        return folder

    def restore_progress(self, meta: dict, folder: Path) -> None:
        self.best_state, _ = load_tensors(folder / "best.safetensors")
        self.epoch, self.best_epoch, self.best_reward = meta["epoch"], meta["best_epoch"], meta["best_reward"]
        self.history, self.evals = meta["history"], meta.get("evals", [])
        self.budget.eval_s = self.evals[-1]["eval_s"] if self.evals else 0.0
        self.tracker.load(meta["tracker"])

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self) -> bool:
        """Sample, reward, update. False if the budget or Stop ended it early (nothing recorded)."""
        t0 = time.perf_counter()
        sampled = self.sample_epoch()
        if sampled is None:
            return False
        traj, images = sampled
        t_sample = time.perf_counter() - t0
        rewards, info = self.rewards.collect()
        reward_t, all_prompts, info = self.sync.rewards(rewards, traj.prompts, info)
        adv = advantages(self.tracker, all_prompts, reward_t, self.sync.share(len(reward_t)))
        t1 = time.perf_counter()
        stats = self.train(traj, adv)
        row = epoch_row(self, reward_t, info, stats, (time.perf_counter() - t0, t_sample, time.perf_counter() - t1))
        self.sync.check_replicas(self.params, self.epoch)
        self.history.append(row)
        self.reporter.metric(kind="epoch", **row)
        self.epoch += 1
        if self.sync.is_main:
            with self.budget.timing("save_s"):
                save_samples(self.work / "samples", images, rewards)
                self.save_checkpoint()
        return True

    def sample_epoch(self) -> tuple[Trajectories, list] | None:
        """This process's samples of the epoch, each batch handed to the rewards as it is decoded; None if the
        budget or Stop came first. The seed depends on the epoch only, so that a resumed run needs no RNG state."""
        cfg, budget = self.cfg, self.budget
        seed = (cfg.seed * 1_000_003 + self.epoch) * 1009 + self.sync.rank
        self.generator.manual_seed(seed)
        self.rng.seed(seed)
        trajs, images = [], []
        for start in range(0, self.local_samples, cfg.sample_batch_size):
            if self.stop_now(budget.batch_s):
                self.rewards.discard()
                return None
            batch = [
                self.rng.choice(self.prompts) for _ in range(min(cfg.sample_batch_size, self.local_samples - start))
            ]
            with budget.timing("batch_s"):
                traj, batch_images = self.sampler.batch(batch, self.generator)
                self.rewards.submit(batch_images)
            trajs.append(traj)
            images += batch_images
            self.report_phase("sampling", len(images), self.local_samples)
        return Trajectories.join(trajs), images

    def train(self, traj: Trajectories, adv: torch.Tensor) -> dict:
        """`inner_epochs` PPO passes over the samples; the update's figures and how far the LoRA moved."""
        cfg, budget = self.cfg, self.budget
        self.pipe.unet.train()
        stats, before = {}, [p.detach().clone() for p in self.params]
        # Until a PPO step has been timed: a step trains train_batch_size samples on a share of their timesteps, each a
        # guided forward and a backward (about 3 guided passes where sampling makes 1).
        budget.step_s = (
            budget.step_s or budget.batch_s * 3 * cfg.timestep_fraction * cfg.train_batch_size / cfg.sample_batch_size
        )
        for _ in range(cfg.inner_epochs):
            stats = ppo_update(
                self.pipe.unet,
                self.pipe.scheduler,
                traj,
                adv,
                self.sampler.uncond,
                self.optimizer,
                self.params,
                cfg,
                self.generator,
                should_stop=budget.steps(self.stop_now),
                sync_grads=self.sync.average_grads,
                precision=self.precision,
                scaler=self.scaler,
            )
        return {**stats, **lora_change(self.params, before)}

    def eta_s(self) -> float | None:
        batches = -(-self.local_samples // self.cfg.sample_batch_size)
        return self.budget.eta_s(self.cfg, batches, self.cfg.epochs - self.epoch)

    def report_phase(self, phase: str, done: int, total: int) -> None:
        """Progress inside an epoch or evaluation, so that the first minutes show movement and an estimate."""
        self.reporter.progress(self.epoch, self.cfg.epochs, phase=f"{phase} {done}/{total}", eta_s=self.eta_s())

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """The mean reward of the current weights on fixed prompts and fixed noise; the best so far is kept.
        Its row is also an event (kind "eval") and part of the checkpoint."""
        cfg = self.cfg
        with self.budget.timing("eval_s", longest=False):
            figures = evaluation.evaluate(
                self.sampler,
                self.rewards.reward_fn,
                self.sync,
                evaluation.eval_prompts(self.prompts, cfg.eval_samples, self.sync.world),
                cfg.seed,
                lambda: self.budget.timing("batch_s"),
                lambda done, total: self.report_phase("evaluating", done, total),
            )
            if figures["reward_mean"] > self.best_reward:
                self.best_reward, self.best_epoch, self.best_state = (
                    figures["reward_mean"],
                    self.epoch,
                    self.adapter_state(),
                )
        row = {"epoch": self.epoch, **figures, "best_epoch": self.best_epoch, "best_reward": self.best_reward}
        row["eval_s"] = round(self.budget.eval_s, 3)
        self.evals.append(row)
        self.reporter.metric(kind="eval", **row)
        for code, message in self.diagnostics.evaluated(self.evals):
            self.reporter.warning(code, message)
        return row

    def evaluated_now(self) -> bool:
        return bool(self.evals) and self.evals[-1]["epoch"] == self.epoch

    def stop_now(self, need: float) -> bool:
        """Stop, or no room in the budget for `need` seconds of work; with several processes, all of them stop at
        the same point."""
        return self.sync.any(not self.budget.room_for(need) or self.reporter.should_stop())

    def write_output(self, reason: str) -> RLResult:
        """The RL LoRA from the best evaluated weights, and best.json (by the main process only)."""
        if not self.sync.is_main:
            return RLResult(self.ws.ddpo_lora(self.user), "", self.epoch, self.best_epoch, self.best_reward)
        return write_rl_lora(self, reason)
