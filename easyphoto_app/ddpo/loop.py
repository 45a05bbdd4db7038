"""The RL run: epochs of sample -> reward -> PPO update, under a time budget, always ending with a file.

The best weights are chosen by evaluation: every `eval_every` epochs (before the
first, and after the last unless Stop ended the run) the current LoRA samples
`eval_samples` images from fixed prompts and fixed noise, so evaluations differ only
by the weights. (The training samples' mean reward is a poor judge: 8 random prompts
and noise, and a max over epochs is biased upward.) Whatever ends the run - the budget,
the epoch count, Stop, an error after the first evaluation - `loras/ddpo_<id>.safetensors`
is written from the best evaluated weights. The face LoRA is loaded read-only and its
hash is checked after.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path

from easyphoto_app.ddpo.budget import Budget
from easyphoto_app.ddpo.diagnose import Diagnostics, diversity, thumbnail
from easyphoto_app.errors import UserError
from easyphoto_app.families.conditioning import Cond
from easyphoto_app.jobs import Reporter
from easyphoto_app.lora_io import (
    complete_checkpoints,
    load_tensors,
    optimizer_tensors,
    peft_state,
    restore_optimizer,
    save_lora,
    write_checkpoint_dir,
)
from easyphoto_app.models import DEMO_RL_STEPS
from easyphoto_app.settings import TRIGGER, RLConfig, Settings
from easyphoto_app.workspace import Workspace, atomic_write_json

DDPO_ADAPTER = "ddpo"
FACE_ADAPTER = "face"
EVAL_SHARE_LIMIT = 0.15  # evaluation's share of the run's time
ASSETS = Path(__file__).resolve().parents[2] / "assets"


@dataclass
class RLResult:
    path: Path
    message: str
    epochs: int
    best_epoch: int
    best_reward: float


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_prompts() -> list[str]:
    path = ASSETS / "rl_prompts.txt"
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    return [line for line in lines if line and not line.startswith("#")] or [TRIGGER]


class RLRun:
    def __init__(self, settings: Settings, ws: Workspace, user: str, reporter: Reporter, reward_fn=None):
        from easyphoto_app.jobs import download_progress
        from easyphoto_app.model_defaults import model_defaults
        from easyphoto_app.models import native_resolution, pick_device, resolve_model

        self.settings, self.ws, self.user, self.reporter = settings, ws, user, reporter
        if settings.rl.eta <= 0:
            raise UserError(
                "RL needs eta > 0: with eta 0 the sampler is deterministic and DDPO has nothing to learn from."
            )
        self.face_lora = ws.face_lora(user)
        if not self.face_lora.exists():
            raise UserError(
                f"User '{user}' has no face LoRA yet: train it first (Photos & Training tab or 'train --user {user}')."
            )
        if reward_fn is None:
            from easyphoto_app.faces.likeness import scorer_for

            reward_fn = scorer_for(ws, user)  # raises a clear UserError without a reference face
        self.reward_fn = reward_fn
        self.device = pick_device(settings.app.device)
        self.model = resolve_model(
            settings.app.model, settings.data_dir, self.device, progress=download_progress(reporter)
        )
        self.cfg: RLConfig = model_defaults(settings.rl, self.model, settings.given_in("rl"))
        self.resolution = native_resolution(self.model, self.cfg.resolution, training=True)
        self.steps = min(self.cfg.steps, DEMO_RL_STEPS) if self.model.is_demo else self.cfg.steps
        self.work = ws.ddpo_dir(user)
        self.prompts = load_prompts()
        # On a GPU the next batch is sampled while the face backend (on the CPU) scores the last one;
        # on a CPU both would fight for the same cores.
        self.reward_pool = ThreadPoolExecutor(1, thread_name_prefix="reward") if self.device != "cpu" else None
        self.budget = Budget(self.cfg.max_hours)  # counted from here: loading the model is part of the run
        self.diagnostics = Diagnostics(self.cfg.lr)

    # ------------------------------------------------------------------ setup
    def setup(self):
        import torch
        from accelerate import Accelerator
        from diffusers import DDIMScheduler

        from easyphoto_app.ddpo.ppo import add_rl_lora
        from easyphoto_app.families import of_pipeline
        from easyphoto_app.models import load_pipeline
        from easyphoto_app.precision import pick_rl_precision

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
        self.params = add_rl_lora(pipe.unet, self.cfg.rank, DDPO_ADAPTER)
        if self.device == "cuda":  # the same savings that ddpo.memory's estimate counts
            pipe.unet.enable_gradient_checkpointing()
            pipe.vae.enable_slicing()
        self.pipe = pipe
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.lr, weight_decay=1e-4)
        # Data-parallel under `accelerate launch`: every process samples its share of the epoch, the rewards
        # are gathered for the advantages and the LoRA gradients averaged, so the weights stay the same everywhere.
        self.accelerator = Accelerator(cpu=self.device == "cpu")
        self.local_samples = -(-self.cfg.samples_per_epoch // self.accelerator.num_processes)
        with torch.no_grad():
            self.prompt_emb = {p: family.encode(pipe, [p], self.device, self.resolution) for p in set(self.prompts)}
            self.uncond = family.encode(pipe, [""], self.device, self.resolution)
        self.generator = torch.Generator("cpu")
        self.rng = random.Random()
        from easyphoto_app.ddpo.stat_tracking import PerPromptStatTracker

        self.tracker = PerPromptStatTracker(32, 16)
        self.epoch, self.best_epoch, self.best_reward, self.history, self.evals = 0, -1, float("-inf"), [], []
        self.best_state = self.adapter_state()  # the untrained adapter: a file exists even if epoch 0 never ends

    def latent_shape(self) -> tuple[int, int, int]:
        """One sample's latents: the autoencoder's own reduction (SD 1.5's is 8, the face model's 4)."""
        side = self.resolution // self.pipe.vae_scale_factor
        return self.pipe.unet.config.in_channels, side, side

    def adapter_state(self) -> dict:
        return {k: v.clone() for k, v in peft_state(self.pipe.unet, DDPO_ADAPTER, "unet").items()}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        opt, opt_meta = optimizer_tensors(self.optimizer)
        meta = {
            "epoch": self.epoch,
            "best_epoch": self.best_epoch,
            "best_reward": self.best_reward,
            "history": self.history,
            "evals": self.evals,
            "tracker": self.tracker.state(),
            "settings": vars(self.cfg),
            "scaler": self.scaler.state_dict(),
        }
        write_checkpoint_dir(
            self.work / f"epoch-{self.epoch}",
            {
                "adapter.safetensors": (self.adapter_state(), meta),
                "optimizer.safetensors": (opt, opt_meta),
                "best.safetensors": (self.best_state, {"epoch": self.best_epoch, "reward": self.best_reward}),
            },
        )
        for old in complete_checkpoints(self.work, "epoch")[: -max(1, self.cfg.keep_checkpoints)]:
            shutil.rmtree(old, ignore_errors=True)

    def load_checkpoint(self, folder: Path) -> None:
        from peft.utils import set_peft_model_state_dict

        adapter, meta = load_tensors(folder / "adapter.safetensors")
        set_peft_model_state_dict(self.pipe.unet, {k[5:]: v for k, v in adapter.items()}, adapter_name=DDPO_ADAPTER)
        opt, opt_meta = load_tensors(folder / "optimizer.safetensors")
        restore_optimizer(self.optimizer, opt, opt_meta)
        self.best_state, _ = load_tensors(folder / "best.safetensors")
        self.epoch, self.best_epoch, self.best_reward = meta["epoch"], meta["best_epoch"], meta["best_reward"]
        self.history, self.evals = meta["history"], meta.get("evals", [])
        self.budget.eval_s = self.evals[-1]["eval_s"] if self.evals else 0.0
        if meta.get("scaler"):
            self.scaler.load_state_dict(meta["scaler"])
        self.tracker.load(meta["tracker"])

    def adopt_settings(self, folder: Path) -> None:
        _, meta = load_tensors(folder / "adapter.safetensors")
        keep_now = {"max_hours", "epochs"}  # the budget and epoch count may be changed when resuming
        for f in fields(RLConfig):
            if f.name in meta["settings"] and f.name not in keep_now:
                setattr(self.cfg, f.name, meta["settings"][f.name])

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self) -> bool:
        """Sample, reward, update. False if the budget or Stop ended it early (nothing recorded)."""
        import torch

        from easyphoto_app.ddpo.ppo import Trajectories, decode, lora_change, ppo_update, sample

        cfg, t0, budget = self.cfg, time.perf_counter(), self.budget
        shape = self.latent_shape()
        trajs, images, prompts, scored = [], [], [], []
        seed = (cfg.seed * 1_000_003 + self.epoch) * 1009 + self.accelerator.process_index  # resume needs no RNG state
        self.generator.manual_seed(seed)
        self.rng.seed(seed)
        self.pipe.unet.eval()
        for start in range(0, self.local_samples, cfg.sample_batch):
            if self.stop_now(budget.batch_s):
                return False
            batch = [self.rng.choice(self.prompts) for _ in range(min(cfg.sample_batch, self.local_samples - start))]
            cond = Cond.cat([self.prompt_emb[p] for p in batch])
            with budget.timing("batch_s"):
                traj = sample(
                    self.pipe.unet,
                    self.pipe.scheduler,
                    cond,
                    self.uncond,
                    batch,
                    self.steps,
                    cfg.guidance,
                    cfg.eta,
                    shape,
                    self.generator,
                    self.precision,
                )
                batch_images = decode(self.pipe.vae, traj.latents[:, -1])
                scored.append(
                    self.reward_pool.submit(self.reward_fn, batch_images)
                    if self.reward_pool
                    else self.reward_fn(batch_images)
                )
            trajs.append(traj)
            images += batch_images
            prompts += batch
            self.report_phase("sampling", len(images), self.local_samples)
        t_sample = time.perf_counter() - t0
        rewards, info = _merge_rewards([r.result() if self.reward_pool else r for r in scored])
        reward_t, all_prompts, info = self._gather(rewards, prompts, info)
        advantages = torch.tensor(self.tracker.update(all_prompts, reward_t.tolist()), dtype=torch.float32)
        rank = self.accelerator.process_index
        advantages = advantages[rank * self.local_samples : (rank + 1) * self.local_samples]
        mean_reward = float(reward_t.mean())
        joined = Trajectories(
            torch.cat([t.latents for t in trajs]),
            torch.cat([t.log_probs for t in trajs]),
            trajs[0].timesteps,
            Cond.cat([t.cond for t in trajs]),
            prompts,
        )
        self.pipe.unet.train()
        t1 = time.perf_counter()
        stats, before = {}, [p.detach().clone() for p in self.params]
        # Until a PPO step has been timed: a step trains train_batch samples on a share of their timesteps, each a
        # guided forward and a backward (about 3 guided passes where sampling makes 1).
        budget.step_s = budget.step_s or budget.batch_s * 3 * cfg.timestep_fraction * cfg.train_batch / cfg.sample_batch
        for _ in range(cfg.inner_epochs):
            stats = ppo_update(
                self.pipe.unet,
                self.pipe.scheduler,
                joined,
                advantages,
                self.uncond,
                self.optimizer,
                self.params,
                cfg,
                self.generator,
                should_stop=budget.steps(self.stop_now),
                sync_grads=self._average_grads,
                precision=self.precision,
                scaler=self.scaler,
            )
        t_train = time.perf_counter() - t1
        stats.update(lora_change(self.params, before))
        n = len(reward_t)
        row = {
            "epoch": self.epoch,
            "samples": n,
            "reward_mean": mean_reward,
            "reward_std": float(reward_t.std()) if n > 1 else 0.0,
            "reward_min": float(reward_t.min()),
            "reward_max": float(reward_t.max()),
            **info,
            **stats,
            "epoch_s": round(time.perf_counter() - t0, 3),
            "sample_per_s": round(n / max(t_sample, 1e-9), 3),
            "train_per_s": round(n / max(t_train, 1e-9), 3),
            "time_left_s": round(budget.left(), 1),
            "best_epoch": self.best_epoch,
            "precision": self.precision.name,
        }
        if self.precision.name == "fp16":
            row["grad_scale"] = float(self.scaler.get_scale())
        if self.accelerator.num_processes > 1:
            row["processes"] = self.accelerator.num_processes
            self._check_replicas()
        self.history.append(row)
        self.reporter.metric(kind="epoch", **row)
        self.epoch += 1
        if self.accelerator.is_main_process:
            with budget.timing("save_s"):
                self._save_samples(images, rewards)
                self.save_checkpoint()
        return True

    def eta_s(self) -> float | None:
        """The seconds the run still needs, within its budget, from the slowest sample batch so far: an epoch samples
        its batches and trains them at about twice that again per inner epoch (eval_share's cost model). None
        before a batch has been timed."""
        cfg, batch_s = self.cfg, self.budget.batch_s
        if not batch_s:
            return None
        batches = -(-self.local_samples // cfg.sample_batch)
        per_epoch = batches * batch_s * (1 + 2 * cfg.timestep_fraction * cfg.inner_epochs)
        return round(min(self.budget.left(), (cfg.epochs - self.epoch) * per_epoch), 1)

    def report_phase(self, phase: str, done: int, total: int) -> None:
        """Progress inside an epoch or evaluation, so that the first minutes show movement and an estimate."""
        self.reporter.progress(self.epoch, self.cfg.epochs, phase=f"{phase} {done}/{total}", eta_s=self.eta_s())

    def eval_prompts(self) -> list[str]:
        """Fixed prompts: the list's first ones, in order (cycled if the list is short), as many as asked rounded
        up to a multiple of the process count, so that every process scores an equal share."""
        n_proc = self.accelerator.num_processes
        count = -(-max(1, self.cfg.eval_samples) // n_proc) * n_proc
        return [self.prompts[i % len(self.prompts)] for i in range(count)]

    def evaluate(self) -> dict:
        """The mean reward of the current weights on fixed prompts and fixed noise; the best so far is kept.
        Its row is also an event (kind "eval") and part of the checkpoint."""
        with self.budget.timing("eval_s", longest=False):
            row = self._evaluate()
        row["eval_s"] = round(self.budget.eval_s, 3)
        self.evals.append(row)
        self.reporter.metric(kind="eval", **row)
        for code, message in self.diagnostics.evaluated(self.evals):
            self.reporter.warning(code, message)
        return row

    def _evaluate(self) -> dict:
        import torch

        from easyphoto_app.ddpo.ppo import decode, sample

        cfg = self.cfg
        prompts = self.eval_prompts()
        n_proc, rank = self.accelerator.num_processes, self.accelerator.process_index
        share = len(prompts) // n_proc
        mine = prompts[rank * share : (rank + 1) * share]
        shape = self.latent_shape()
        self.pipe.unet.eval()
        parts, thumbs = [], []
        for start in range(0, len(mine), cfg.sample_batch):
            batch = mine[start : start + cfg.sample_batch]
            generator = torch.Generator("cpu").manual_seed(
                cfg.seed + 7919 * (rank * share + start + 1)
            )  # the same noise each time
            with self.budget.timing("batch_s"):  # a training batch takes as long: the first one's estimate
                traj = sample(
                    self.pipe.unet,
                    self.pipe.scheduler,
                    Cond.cat([self.prompt_emb[p] for p in batch]),
                    self.uncond,
                    batch,
                    self.steps,
                    cfg.guidance,
                    cfg.eta,
                    shape,
                    generator,
                    self.precision,
                )
                images = decode(self.pipe.vae, traj.latents[:, -1])
                parts.append(self.reward_fn(images))
            thumbs += [thumbnail(im) for im in images]
            self.report_phase("evaluating", start + len(batch), len(mine))
        rewards, info = _merge_rewards(parts)
        reward_t, _, info = self._gather(rewards, mine, info)
        reward = float(reward_t.mean())
        if reward > self.best_reward:
            self.best_reward, self.best_epoch, self.best_state = reward, self.epoch, self.adapter_state()
        return {
            "epoch": self.epoch,
            "samples": len(reward_t),
            "reward_mean": reward,
            **info,
            "diversity": self._diversity(thumbs),
            "best_epoch": self.best_epoch,
            "best_reward": self.best_reward,
        }

    def _diversity(self, thumbs: list) -> float | None:
        """The evaluation samples' diversity (ddpo.diagnose), over every process's samples."""
        from accelerate.utils import gather_object

        value = diversity(thumbs if self.accelerator.num_processes == 1 else gather_object(thumbs))
        return None if value is None else round(value, 4)

    def fit_eval_budget(self, limit: float = EVAL_SHARE_LIMIT) -> str | None:
        """Evaluate less often when the settings would spend more than `limit` of the run on it; says so."""
        before = self.cfg.eval_every
        while self.eval_share() > limit and self.cfg.eval_every < max(1, self.cfg.epochs):
            self.cfg.eval_every += 1
        if self.cfg.eval_every == before:
            return None
        return (
            f"Evaluating every {self.cfg.eval_every} epochs instead of {before}, to keep it under {limit:.0%} of the "
            f"time with {self.cfg.samples_per_epoch} samples per epoch."
        )

    def evaluated_now(self) -> bool:
        return bool(self.evals) and self.evals[-1]["epoch"] == self.epoch

    def eval_share(self) -> float:
        """The planned share of the run's time spent evaluating: an evaluation samples without training, and a
        trained sample costs about 3 sampling passes (a backward is about 2 forwards) per inner epoch."""
        cfg = self.cfg
        per_epoch = cfg.samples_per_epoch * (1 + 2 * cfg.timestep_fraction * cfg.inner_epochs)
        return cfg.eval_samples / (cfg.eval_samples + max(1, cfg.eval_every) * per_epoch)

    def _gather(self, rewards: list[float], prompts: list[str], info: dict):
        """Every process's rewards, prompts and (averaged) info, in process order; as is with one process."""
        import torch
        from accelerate.utils import gather_object

        acc = self.accelerator
        reward_t = acc.gather(torch.tensor(rewards, dtype=torch.float32, device=acc.device)).cpu()
        if acc.num_processes == 1:
            return reward_t, prompts, info
        keys = sorted(info)
        means = acc.reduce(torch.tensor([float(info[k]) for k in keys], device=acc.device), "mean").tolist()
        return reward_t, gather_object(prompts), dict(zip(keys, means))

    def _check_replicas(self) -> None:
        """The same data and averaged gradients keep every process's LoRA identical; a drift would be a bug."""
        import torch

        local = torch.stack(
            [sum(p.double().sum() for p in self.params), sum(p.double().abs().sum() for p in self.params)]
        )
        every = self.accelerator.gather(local.to(self.accelerator.device).unsqueeze(0)).cpu()
        if not torch.equal(every, every[:1].expand_as(every)):
            raise RuntimeError(f"The RL LoRA differs between processes after epoch {self.epoch}: {every.tolist()}")

    def _average_grads(self, params) -> None:
        import torch

        if self.accelerator.num_processes == 1:
            return
        flat = self.accelerator.reduce(torch.cat([p.grad.flatten() for p in params]), "mean")
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))

    def _save_samples(self, images, rewards) -> None:
        folder = self.work / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(images[:8]):
            img.save(folder / f"latest-{i}.png")
        atomic_write_json(
            folder / "latest.json",
            [{"file": f"latest-{i}.png", "reward": round(float(r), 4)} for i, r in enumerate(rewards[:8])],
        )

    def stop_now(self, need: float) -> bool:
        """Stop, or no room in the budget for `need` seconds of work; with several processes, all of them stop at
        the same point (or they would hang)."""
        stop = not self.budget.room_for(need) or self.reporter.should_stop()
        if self.accelerator.num_processes == 1:
            return stop
        import torch

        return bool(
            self.accelerator.reduce(torch.tensor([float(stop)], device=self.accelerator.device), "sum").item() > 0
        )

    # ------------------------------------------------------------------ output
    def write_output(self, reason: str) -> RLResult:
        cfg = self.cfg
        if not self.accelerator.is_main_process:
            return RLResult(self.ws.ddpo_lora(self.user), "", self.epoch, self.best_epoch, self.best_reward)
        path = save_lora(
            self.ws.ddpo_lora(self.user),
            self.best_state,
            float(cfg.rank),
            {
                "ss_network_module": "networks.lora",
                "ss_network_dim": str(cfg.rank),
                "ss_network_alpha": str(float(cfg.rank)),
                "ss_base_model_version": self.family.WEBUI_VERSION,
                "easyphoto_user": self.user,
                "easyphoto_kind": "ddpo",
                "easyphoto_base_model": self.model.source,
                "easyphoto_best_epoch": self.best_epoch,
                "easyphoto_best_reward": self.best_reward if self.best_epoch >= 0 else None,
                "easyphoto_epochs": self.epoch,
                "easyphoto_settings": vars(cfg),
                "easyphoto_end": reason,
            },
            owner=self.user,
            family=self.family,
        )
        best = (
            f"best evaluated after {self.best_epoch} epoch(s) (mean reward {self.best_reward:.4f})"
            if self.best_epoch >= 0
            else "no evaluation finished"
        )
        message = f"RL LoRA written to {path} after {self.epoch} epoch(s), {best}; ended by {reason}."
        atomic_write_json(
            self.work / "best.json",
            {
                "epoch": self.best_epoch,
                "reward": self.best_reward if self.best_epoch >= 0 else None,
                "epochs": self.epoch,
                "reason": reason,
                "path": str(path),
            },
        )
        return RLResult(path, message, self.epoch, self.best_epoch, self.best_reward)


def _merge_rewards(parts: list[tuple[list[float], dict]]) -> tuple[list[float], dict]:
    """Per-batch (rewards, info) -> one; info values (rates) are averaged over the samples."""
    rewards = [r for part, _ in parts for r in part]
    keys = {k for _, info in parts for k in info}
    info = {k: sum(info.get(k, 0.0) * len(part) for part, info in parts) / max(len(rewards), 1) for k in keys}
    return rewards, info
