"""DDPO speed and memory: our RL loop vs trl 0.23.1's DDPOTrainer at equal settings. Prints JSON.

usage: python benchmarks/ddpo.py [--epochs 3] [--trl-path DIR] [--precisions fp32,fp16,bf16] [--device cpu|cuda]
                                 [--model demo|sd15|PATH] [--steps 10] [--reward brightness|face]
                                 [--eval-samples 8] [--baseline CHECKOUT] [--timestep-batches 2,4]
  --model sd15 writes a single-file checkpoint of SD1.5's shape with random weights (about 2 GB, temp folder) and
  runs ours on it at 512 px with --steps DDIM steps: the issue's GPU settings are --model sd15 --steps 50.
Ours runs once per precision (UNet in that dtype, step maths float32, fp16 with a gradient scaler) and reports
the PPO update's numerics too: the fraction of exactly-zero LoRA-B gradients, of ratios exactly 1, approx KL and
clip fraction per epoch, the updates the fp16 scaler skipped, the evaluated reward on fixed noise before the first
epoch and after the last. first_ratio_error is |ratio - 1| on each epoch's first PPO step: the log-prob the update
recomputes against sampling's, at identical weights. --reward face scores with the user's real face
reward instead of brightness: on random weights no sample has a face, every reward is 0 and so is every advantage.
Also prints the meta-device GPU memory estimate for an SD1.5-sized run (512 px, 50 steps, sample batch 4).
trl is not a dependency of EasyPhoto: install it apart, e.g.
    pip install --no-deps trl==0.23.1 -t /tmp/trl      and pass --trl-path /tmp/trl
Both run on the demo model (the face model, 128 px; 10 DDIM steps, CFG 5), 8 samples/epoch in batches of 4, train
batch 1, timestep fraction 1, the same brightness reward. Each side reports the work it did (`work`: the resolution
of the images its reward saw, DDIM steps, batches, guidance, eta); the benchmark refuses to compare sides whose
work differs. Each side runs in its own process so that its peak RSS is its own; the first epoch is a warm-up
and is not timed; s_per_epoch is wall-clock on both sides (ours includes its per-epoch checkpoint).
With trl, `floor` times the UNet and VAE calls of one epoch alone (no scheduler maths, rewards or bookkeeping), at
trl's batching (1 timestep per training pass) and at ours: `best_possible_speedup` is trl's s/epoch over that time,
what no loop making those calls could beat by much. --timestep-batches runs ours again at other timestep batches
(the speed/memory trade-off), each compared with trl.
--baseline CHECKOUT runs ours from another checkout too (ours_before, with its own ratios to trl), so that before
and after share one invocation and one machine state: on a shared machine, compare ratios, not seconds.
Difference in work: ours first fuses the user's face LoRA into the UNet (once, at setup), then both
train one rank-4 LoRA.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLES, BATCH, STEPS = 8, 4, 10


def brightness(images) -> list[float]:
    import numpy as np

    return [float(np.asarray(im, dtype=np.float32).mean() / 255.0) for im in images]


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def gpu_memory_mb() -> dict:
    """What torch's allocator peaked at, what it holds, and what nvidia-smi shows for this process now (the
    allocator keeps what it reserved, so at the end of a run that is the process's peak as the driver saw it)."""
    import os

    import torch

    out = {
        "peak_vram_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
        "peak_vram_reserved_mb": round(torch.cuda.max_memory_reserved() / 2**20, 1),
    }
    try:
        rows = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.splitlines()
        mine = [int(r.split(",")[1]) for r in rows if r.split(",")[0].strip() == str(os.getpid())]
        out["nvidia_smi_process_mb"] = mine[0] if mine else f"not listed: {rows[:3]}"
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as e:
        out["nvidia_smi_process_mb"] = f"unreadable: {e}"
    out["gpu"] = torch.cuda.get_device_name()
    return out


# A --baseline checkout from before the settings took diffusers' names reads its RL settings by the old ones.
OLD_RL_NAMES = {
    "sample_batch_size": "sample_batch",
    "train_batch_size": "train_batch",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
}


def rl_name(cfg, name: str) -> str:
    return name if hasattr(cfg, name) else OLD_RL_NAMES.get(name, name)


def run_ours(
    home: Path,
    epochs: int,
    precision: str = "fp32",
    device: str = "cpu",
    model: str = "demo",
    steps: int = STEPS,
    reward: str = "brightness",
    eval_samples: int = 8,
    timestep_batch: int | None = None,
) -> dict:
    from easyphoto_app.ddpo.loop import RLRun
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    s = load_settings(home)
    s.app.model, s.app.device, s.app.precision = model, device, precision
    given = {
        "samples_per_epoch": SAMPLES,
        "sample_batch_size": BATCH,
        "num_inference_steps": steps,
        "train_batch_size": 1,
    }
    for name, value in given.items():
        setattr(s.rl, rl_name(s.rl, name), value)
    s.rl.eval_samples = eval_samples
    if timestep_batch:
        s.rl.timestep_batch = timestep_batch
    sizes = set()

    def by_brightness(images):
        sizes.update(im.size for im in images)
        return brightness(images), {"no_face_rate": 0.0}

    run = RLRun(s, Workspace(home), "bench", Reporter(), reward_fn=by_brightness if reward == "brightness" else None)
    run.setup()
    first = run.evaluate()  # fixed prompts and noise, before any update and after the last: the gain in reward
    walls = []
    for _ in range(epochs):
        t = time.perf_counter()
        run.run_epoch()
        walls.append(time.perf_counter() - t)
    last = run.evaluate()
    timed = run.history[1:]
    cfg = run.cfg
    out = {
        "work": work(
            sizes,
            run.steps,
            getattr(cfg, rl_name(cfg, "sample_batch_size")),
            getattr(cfg, rl_name(cfg, "train_batch_size")),
            samples_per_epoch=cfg.samples_per_epoch,
            timestep_fraction=cfg.timestep_fraction,
            guidance=getattr(cfg, rl_name(cfg, "guidance_scale")),
            eta=cfg.eta,
        ),
        "timestep_batch": cfg.timestep_batch,
        "precision": run.precision.name,
        "device": run.device,
        "epoch_s_each": [round(w, 2) for w in walls],
        "s_per_epoch": _mean(walls[1:]),
        "sample_per_s": _mean([h["sample_per_s"] for h in timed]),
        "train_per_s": _mean([h["train_per_s"] for h in timed]),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        # numerics of the PPO update, over every epoch
        "grad_zero_frac": _mean([h["grad_zero_frac"] for h in run.history], 6),
        "ratio_one_frac": _mean([h["ratio_one_frac"] for h in run.history]),
        "approx_kl": [float(f"{h['approx_kl']:.3g}") for h in run.history],
        "clipfrac": [round(h["clipfrac"], 3) for h in run.history],
        "grad_scale": [h.get("grad_scale") for h in run.history],  # fp16's GradScaler after each epoch
        "skipped_updates": [f"{h['skipped_updates']}/{h['updates']}" for h in run.history],
        "update_norm": [float(f"{h['update_norm']:.3g}") for h in run.history],
        "no_face_rate": _mean([h["no_face_rate"] for h in run.history]),
        "first_ratio_error": _mean([abs(h["ratio_first"] - 1) for h in run.history], 8),
        "reward_mean": [round(h["reward_mean"], 4) for h in run.history],
        "eval_reward_before": round(first["reward_mean"], 4),
        "eval_reward_after": round(last["reward_mean"], 4),
        "eval_gain": round(last["reward_mean"] - first["reward_mean"], 4),
    }
    if run.device == "cuda":
        out.update(gpu_memory_mb())
    return out


def work(sizes: set, ddim_steps: int, sample_batch: int, train_batch: int, **more) -> dict:
    """What one epoch of a side computes (the images' size as its reward saw them); two sides are compared only if
    these are equal."""
    size = "x".join(map(str, next(iter(sizes)))) if len(sizes) == 1 else sorted(sizes)
    return dict(resolution=size, ddim_steps=ddim_steps, sample_batch=sample_batch, train_batch=train_batch, **more)


def run_trl(model_dir: Path, epochs: int, workdir: Path, steps: int) -> dict:
    from accelerate import PartialState
    from trl import DDPOConfig, DDPOTrainer, DefaultDDPOStableDiffusionPipeline

    PartialState(cpu=True)  # trl's pipeline logs through accelerate before its trainer makes one

    config = DDPOConfig(
        num_epochs=epochs,
        mixed_precision="no",
        sample_num_steps=steps,
        sample_batch_size=BATCH,
        sample_num_batches_per_epoch=SAMPLES // BATCH,
        train_batch_size=1,
        train_gradient_accumulation_steps=1,
        save_freq=10**6,
        logdir=str(workdir / "logs"),
        per_prompt_stat_tracking=False,
        accelerator_kwargs={"cpu": True},
    )
    pipe = DefaultDDPOStableDiffusionPipeline(str(model_dir), use_lora=True)
    stamps: list[dict] = []
    original_sample, original_train = DDPOTrainer._generate_samples, DDPOTrainer._train_batched_samples

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            stamps.append({"phase": name, "s": time.perf_counter() - t})
            return out

        return wrapper

    DDPOTrainer._generate_samples = timed("sample", original_sample)
    DDPOTrainer._train_batched_samples = timed("train", original_train)
    sizes = set()

    def reward(images, prompts, meta):
        pil = _pil(images)
        sizes.update(im.size for im in pil)
        return __import__("torch").tensor(brightness(pil)), {}

    trainer = DDPOTrainer(
        config,
        reward,
        lambda: ("easyphoto_face, easyphoto, 1person", {}),
        pipe,
    )
    starts = []
    original_step = trainer.step

    def step(epoch, global_step):
        starts.append(time.perf_counter())
        return original_step(epoch, global_step)

    trainer.step = step
    trainer.train()
    starts.append(time.perf_counter())
    sample_s = [x["s"] for x in stamps if x["phase"] == "sample"][1:]
    train_s = [x["s"] for x in stamps if x["phase"] == "train"][1:]
    epoch_s = [b - a for a, b in zip(starts, starts[1:])][1:]
    return {
        "work": work(
            sizes,
            steps,
            config.sample_batch_size,
            config.train_batch_size,
            samples_per_epoch=config.sample_batch_size * config.sample_num_batches_per_epoch,
            timestep_fraction=config.train_timestep_fraction,
            guidance=config.sample_guidance_scale,
            eta=config.sample_eta,
        ),
        "s_per_epoch": _mean(epoch_s),
        "sample_per_s": round(SAMPLES / _mean(sample_s), 3),
        "train_per_s": round(SAMPLES / _mean(train_s), 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def run_floor(model_dir: Path, steps: int, timestep_batches: list[int]) -> dict:
    """The UNet and VAE calls of one epoch and nothing else (no scheduler maths, log-probs, rewards or bookkeeping),
    on the demo model with a rank-4 LoRA: sampling as both sides batch it, training with `k` timesteps per pass
    (trl: 1). No loop that makes these calls can take less time than they do on this machine."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from easyphoto_app.ddpo.ppo import add_rl_lora

    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet").requires_grad_(False)
    vae = AutoencoderKL.from_pretrained(model_dir / "vae").requires_grad_(False)
    params = add_rl_lora(unet, 4)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    side = unet.config.sample_size
    emb = torch.randn(1, 77, unet.config.cross_attention_dim)
    x = torch.randn(2 * BATCH, unet.config.in_channels, side, side)
    xt = torch.randn(2 * steps, unet.config.in_channels, side, side)  # training: one sample's timesteps, CFG halves
    embs = {n: emb.expand(n, -1, -1).contiguous() for n in range(1, 2 * steps + 1)}

    def sampling():
        with torch.no_grad():
            for _ in range(SAMPLES // BATCH):
                for t in range(steps):
                    unet(x, torch.tensor(t), encoder_hidden_states=embs[len(x)])
                for z in x[:BATCH]:
                    vae.decode(z[None])

    def training(k):
        for _ in range(SAMPLES):
            optimizer.zero_grad()
            for chunk in torch.arange(steps).split(k):
                n = 2 * len(chunk)  # CFG: the unconditional and the conditional half
                out = unet(xt[:n], torch.cat([chunk, chunk]), encoder_hidden_states=embs[n])
                out.sample.mean().backward()
            optimizer.step()

    def timed(fn, *a):
        fn(*a)  # warm-up
        walls = []
        for _ in range(2):
            t = time.perf_counter()
            fn(*a)
            walls.append(time.perf_counter() - t)
        return round(min(walls), 3)

    unet.eval()
    out = {"sampling_s": timed(sampling)}
    unet.train()
    for k in timestep_batches:
        out[f"training_s_timestep_batch_{k}"] = timed(training, k)
        out[f"epoch_floor_s_timestep_batch_{k}"] = round(out["sampling_s"] + out[f"training_s_timestep_batch_{k}"], 3)
    return out


def _pil(images):
    from PIL import Image

    arr = (images.detach().float().clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def _mean(xs, digits: int = 4) -> float:
    return round(sum(xs) / len(xs), digits) if xs else float("nan")


def sd15_estimate() -> dict:
    """The meta-device memory estimate (easyphoto_app.ddpo.memory) for an SD1.5-shaped model at the issue's
    GPU settings: 512 px, 50 steps, sample batch 4, train batch 1, fp16, with the CUDA savings. An estimate,
    not a measurement: no GPU was used. The text encoder, freed once the prompts are embedded, is not in it."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from easyphoto_app.ddpo.memory import estimate_rl_memory
    from easyphoto_app.families import sd15
    from easyphoto_app.settings import RLConfig

    vae = dict(AutoencoderKL.load_config(sd15.CONFIG / "vae"))
    with torch.device("meta"):  # CLIP ViT-L/14's text tower, for its weight bytes only
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(sd15.CONFIG / "text_encoder"))
    out = {"text_encoder_gb": round(sum(p.numel() for p in text.parameters()) * 2 / 2**30, 2)}
    for tb in (4, 3, 1):
        cfg = RLConfig(
            num_inference_steps=50, sample_batch_size=4, train_batch_size=1, samples_per_epoch=8, timestep_batch=tb
        )
        e = estimate_rl_memory({}, vae, cfg, 512, torch.float16)  # {} = SD1.5's UNet
        out[f"timestep_batch_{tb}"] = {
            "weights_gb": round(e.weights_gb, 2),
            "work_gb": round(e.work_gb, 2),
            "total_gb_before_cuda_context": round(e.total_gb, 2),
        }
    return out


def prepare_home(tmp: Path, model_spec: str = "demo", device: str = "cpu") -> tuple[Path, Path, str]:
    """A data dir with a prepared user and a small face LoRA for the model, and the demo model's folder for trl
    (it samples at the UNet's native size, as ours does). Returns the model to run ours on (a path for sd15)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import photos

    home = tmp / "data"
    (home).mkdir(parents=True)
    if model_spec == "sd15":
        from ldm_checkpoint import random_sd15

        model_spec = random_sd15(tmp)
    (home / "settings.toml").write_text(f'[app]\nmodel = {json.dumps(model_spec)}\ndevice = "{device}"\n')
    cli = [sys.executable, "-m", "easyphoto_app", "--data-dir", str(home)]
    for step in (
        ["prepare", "--user", "bench", *map(str, photos.astronaut_set(tmp / "photos"))],
        ["train", "--user", "bench", "--max-train-steps", "2", "--rank", "4", "--lora-alpha", "4"],
    ):
        done = subprocess.run([*cli, *step], cwd=ROOT, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{step[0]} failed:\n{done.stderr[-3000:]}")
    return home, home / "models" / "demo", model_spec  # trl is compared on the demo model only


def _side(cmd: list[str], cwd=ROOT) -> dict:
    """One side in its own process (its peak RSS its own): its JSON, or the error it ended with."""
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    return json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else {"error": out.stderr[-1500:]}


def _compare(result: dict, name: str) -> None:
    """Ours (`name`) against trl, refused unless both did the same work."""
    ours, trl = result[name], result["trl_ddpo"]
    if "error" in ours or "error" in trl:
        return
    if ours["work"] != trl["work"]:
        print(json.dumps(result, indent=2))
        sys.exit(f"Refused: the two sides did different work ({name} {ours['work']}, trl {trl['work']}).")
    suffix = "" if name == "ours" else name[4:]
    result[f"epoch_speedup{suffix}"] = round(trl["s_per_epoch"] / ours["s_per_epoch"], 3)
    result[f"sample_speedup{suffix}"] = round(ours["sample_per_s"] / trl["sample_per_s"], 3)
    result[f"train_speedup{suffix}"] = round(ours["train_per_s"] / trl["train_per_s"], 3)
    result[f"peak_rss_ratio{suffix}"] = round(ours["peak_rss_mb"] / trl["peak_rss_mb"], 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--trl-path", default=None)
    ap.add_argument("--precisions", default="fp32,fp16,bf16", help="ours, one process each (trl runs in fp32)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (ours)")
    ap.add_argument(
        "--model", default="demo", help="demo, sd15 (random weights of SD1.5's shape) or a model path (ours)"
    )
    ap.add_argument(
        "--steps", type=int, default=STEPS, help="DDIM steps per sample (ours; the demo model caps them at 10)"
    )
    ap.add_argument(
        "--reward",
        choices=["brightness", "face"],
        default="brightness",
        help="brightness (every sample differs) or the user's face reward (0 without a face)",
    )
    ap.add_argument("--eval-samples", type=int, default=8, help="fixed-noise samples of the before/after evaluation")
    ap.add_argument(
        "--baseline",
        default=None,
        help="another checkout of EasyPhoto (e.g. git worktree add /tmp/before HEAD~1): its RL runs too, as "
        "ours_before, in the same invocation",
    )
    ap.add_argument(
        "--timestep-batches",
        default="",
        help="more fp32 runs of ours with these timestep batches (e.g. 2,3): the speed/memory trade-off, each "
        "compared with trl",
    )
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--timestep-batch", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--side", choices=["ours", "trl", "floor"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--home", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--trl-model", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.root:
        sys.path.insert(0, a.root)  # ours from another checkout (--baseline)
    if a.side == "ours":
        print(
            json.dumps(
                run_ours(
                    Path(a.home),
                    a.epochs,
                    a.precision,
                    a.device,
                    a.model,
                    a.steps,
                    a.reward,
                    a.eval_samples,
                    a.timestep_batch,
                )
            )
        )
        return
    if a.side == "floor":
        print(json.dumps(run_floor(Path(a.trl_model), a.steps, [int(k) for k in a.timestep_batches.split(",")])))
        return
    if a.side == "trl":
        sys.path.insert(0, a.trl_path)
        print(json.dumps(run_trl(Path(a.trl_model), a.epochs, Path(a.home), a.steps)))
        return
    tmp = Path(tempfile.mkdtemp())
    try:
        home, trl_model, model = prepare_home(tmp, a.model, a.device)
        result = {
            "benchmark": "ddpo",
            "model": a.model,
            "device": a.device,
            "reward": a.reward,
            "samples_per_epoch": SAMPLES,
            "sample_batch": BATCH,
            "timed_epochs": a.epochs - 1,
        }
        base = [sys.executable, __file__, "--epochs", str(a.epochs), "--home", str(home), "--trl-model", str(trl_model)]
        ours_args = ["--side", "ours", "--device", a.device, "--model", model, "--steps", str(a.steps)]
        ours_args += ["--reward", a.reward, "--eval-samples", str(a.eval_samples)]
        for precision in a.precisions.split(","):
            result[f"ours_{precision}"] = _side([*base, *ours_args, "--precision", precision])
            print(json.dumps({precision: result[f"ours_{precision}"]}), file=sys.stderr, flush=True)  # progress
        result["ours"] = result.get("ours_fp32", {"error": "fp32 not run"})
        more = [int(k) for k in a.timestep_batches.split(",") if k]
        for k in more:
            result[f"ours_timestep_batch_{k}"] = _side([*base, *ours_args, "--timestep-batch", str(k)])
        if a.baseline:
            result["ours_before"] = _side([*base, *ours_args, "--root", a.baseline], cwd=a.baseline)
            print(json.dumps({"before": result["ours_before"]}), file=sys.stderr, flush=True)
        if a.trl_path and a.model == "demo":
            steps = result["ours"].get("work", {}).get("ddim_steps", a.steps)  # the demo caps ours' steps
            result["trl_ddpo"] = _side([*base, "--side", "trl", "--trl-path", a.trl_path, "--steps", str(steps)])
            for name in ("ours", "ours_before", *(f"ours_timestep_batch_{k}" for k in more)):
                if name in result:
                    _compare(result, name)
            ours_k = result["ours"].get("timestep_batch", 4)
            floor_k = sorted({1, ours_k, *more, steps})
            floor_args = ["--side", "floor", "--steps", str(steps), "--timestep-batches", ",".join(map(str, floor_k))]
            result["floor"] = floor = _side([*base, *floor_args])
            if "error" not in floor and "error" not in result["trl_ddpo"]:
                # the 2x target needs an epoch within half of trl's: below the floor of any batching, out of reach
                floor["target_2x_s"] = round(result["trl_ddpo"]["s_per_epoch"] / 2, 3)
                floor["best_possible_speedup"] = {
                    k: round(result["trl_ddpo"]["s_per_epoch"] / floor[f"epoch_floor_s_timestep_batch_{k}"], 3)
                    for k in floor_k
                }
        else:
            result["trl_ddpo"] = "not run: pass --trl-path (trl 0.23.1 installed apart)"
        result["sd15_512px_vram_estimate"] = sd15_estimate()
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
