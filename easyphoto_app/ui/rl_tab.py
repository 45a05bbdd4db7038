"""RL tab: start / stop DDPO under a time budget; live reward and memory plots; latest samples."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from easyphoto_app.model_defaults import panel_defaults
from easyphoto_app.monitor import format_vram
from easyphoto_app.settings import help_of
from easyphoto_app.ui.common import Context
from easyphoto_app.ui.job_view import job_controls, series


def build(ctx: Context) -> dict:
    cfg = panel_defaults(ctx.settings, "rl")
    gr.Markdown(
        "Improve the face LoRA's likeness with reinforcement learning (DDPO). The result is a second LoRA, "
        "`ddpo_<id>`, always written when the run ends (budget, epochs, Stop). The face LoRA is never changed."
    )
    with gr.Row():
        user = gr.Textbox(label="User id", placeholder="a user with a trained face LoRA", elem_id="rl-user")
        hours = gr.Slider(
            0.01,
            12,
            value=cfg.max_hours,
            step=0.01,
            label="Max time (hours)",
            info="The run stops cleanly between steps when the time is up.",
        )
    with gr.Accordion("Advanced", open=False, elem_id="rl-advanced"):
        with gr.Row():
            epochs = gr.Number(
                value=cfg.epochs, precision=0, label="Max epochs", elem_id="rl-epochs", info=help_of(cfg, "epochs")
            )
            samples = gr.Number(
                value=cfg.samples_per_epoch,
                precision=0,
                label="Samples per epoch",
                elem_id="rl-samples-per-epoch",
                info=help_of(cfg, "samples_per_epoch"),
            )
            steps = gr.Number(
                value=cfg.num_inference_steps,
                precision=0,
                label="DDIM steps",
                info="The demo model uses at most 10.",
                elem_id="rl-steps",
            )
        with gr.Row():
            lr = gr.Number(value=cfg.learning_rate, label="Learning rate", info=help_of(cfg, "learning_rate"))
            guidance = gr.Number(value=cfg.guidance_scale, label="Guidance", info=help_of(cfg, "guidance_scale"))
            clip = gr.Number(value=cfg.clip_range, label="PPO clip range", info=help_of(cfg, "clip_range"))
        with gr.Row():
            sample_batch = gr.Number(
                value=cfg.sample_batch_size, precision=0, label="Sample batch", info=help_of(cfg, "sample_batch_size")
            )
            timestep_batch = gr.Number(
                value=cfg.timestep_batch, precision=0, label="Timestep batch", info=help_of(cfg, "timestep_batch")
            )

    fields = {
        "max_hours": hours,
        "epochs": epochs,
        "samples_per_epoch": samples,
        "num_inference_steps": steps,
        "learning_rate": lr,
        "guidance_scale": guidance,
        "clip_range": clip,
        "sample_batch_size": sample_batch,
        "timestep_batch": timestep_batch,
    }

    def views():
        with gr.Row():
            reward_plot = gr.LinePlot(
                x="x",
                y="value",
                color="series",
                title="Reward (training, evaluation), face rate, diversity",
                x_title="epoch",
                height=240,
                elem_id="rl-reward-plot",
            )
            memory_plot = gr.LinePlot(
                x="x",
                y="value",
                color="series",
                title="Memory (MB)",
                x_title="seconds",
                height=240,
                elem_id="rl-memory-plot",
            )
        notice = gr.Markdown(elem_id="rl-notice")
        live = gr.Markdown(elem_id="rl-live")
        samples_view = gr.Gallery(label="Latest samples (reward)", columns=8, height=160, elem_id="rl-samples")
        shown = [(c, fn, reads) for c, (fn, reads) in zip((reward_plot, memory_plot, notice, live), EVENT_VIEWS)]
        return [*shown, (samples_view, lambda events: latest_samples(ctx, events), {"epoch"})]

    return {"user": user, **job_controls(ctx, "rl", user, "rl", fields, start_label="Start RL", layout_views=views)}


def epoch_rows(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("kind") == "epoch"]


MEMORY_LINES = ["rss_mb", "ram_used_mb", "vram_alloc_mb", "vram_reserved_mb"]


REWARD_LINES = (
    ("epoch", "training", lambda e: e["reward_mean"]),
    ("eval", "evaluation", lambda e: e["reward_mean"]),
    ("epoch", "face rate", lambda e: 1.0 - e["no_face_rate"] if "no_face_rate" in e else None),
    ("eval", "sample diversity", lambda e: e.get("diversity")),
)


def reward_series(events: list[dict]):
    """The training samples' mean reward (random prompts and noise, noisy), the evaluation's (fixed prompts and
    noise), which chooses the weights that are written, the share of training samples with a face (with no face
    the reward is 0 and there is nothing to learn), and how different the evaluation's samples are (falling to half:
    the RL LoRA is copying one look)."""
    frames = {
        label: series([{**e, label: value(e)} for e in events if e.get("kind") == kind], "metric", "epoch", [label])
        for kind, label, value in REWARD_LINES
    }
    present = [f for f in frames.values() if f is not None]
    if not present:
        return None
    # The plot's colour scale is fixed by the first frame it gets (the evaluation before epoch 0 comes first), so a
    # series without points yet is there as one NaN row: in the legend from the start, nothing drawn.
    x0 = min(f["x"].min() for f in present)
    return pd.concat(
        [
            f if f is not None else pd.DataFrame([{"x": x0, "value": float("nan"), "series": label}])
            for label, f in frames.items()
        ],
        ignore_index=True,
    )


def memory_series(events: list[dict]):
    """The memory samples' lines against the seconds since the first sample."""
    mem = [e for e in events if e.get("kind") == "memory"]
    rows = [(e["t"] - mem[0]["t"], e[y], y) for y in MEMORY_LINES for e in mem if e.get(y) is not None]
    return pd.DataFrame(rows, columns=["x", "value", "series"]).astype({"x": float, "value": float}) if rows else None


def latest_samples(ctx: Context, events: list[dict]) -> list:
    job = ctx.jobs.current()
    folder = ctx.ws.ddpo_dir(job.user) / "samples" if job and epoch_rows(events) else None
    if folder is None or not (folder / "latest.json").exists():
        return []
    return [
        (str(folder / r["file"]), f"reward {r['reward']:.3f}") for r in json.loads((folder / "latest.json").read_text())
    ]


def notice_text(events: list[dict]) -> str:
    """What the run said about whether it is learning (warning events), each with what to do."""
    return "\n\n".join(f"⚠️ **{e['message']}**" for e in events if e["type"] == "warning")


def live_text(events: list[dict]) -> str:
    """The latest memory sample and epoch figures, in words."""
    parts = []
    memory = next(([e] for e in reversed(events) if e.get("kind") == "memory"), [])
    epochs = next(([e] for e in reversed(events) if e.get("kind") == "epoch"), [])
    if memory:
        m = memory[0]
        parts.append(
            f"RSS {m['rss_mb']:.0f} MB · RAM {m['ram_used_mb']:.0f}/{m['ram_total_mb']:.0f} MB · {format_vram(m)}"
        )
    if epochs:
        e = epochs[0]
        parts.append(
            f"epoch {e['epoch']}: reward {e['reward_mean']:.3f} ± {e['reward_std']:.3f}, no face "
            f"{e['no_face_rate']:.0%}, "
            f"KL {e.get('approx_kl', 0):.2e}, clip {e.get('clipfrac', 0):.2f}, {e['epoch_s']:.1f} s, "
            f"{e['time_left_s'] / 60:.0f} min left, {e.get('precision', 'fp32')}"
        )
    evals = [e for e in events if e.get("kind") == "eval"]
    if evals:
        parts.append(
            f"best evaluation: {evals[-1]['best_reward']:.3f} after {evals[-1]['best_epoch']} epoch(s) "
            f"(last: {evals[-1]['reward_mean']:.3f} after {evals[-1]['epoch']}); that LoRA is the one written"
        )
    return "\n\n".join(parts)


# The views drawn from events, with the channels each reads (jobs.channel_of): each is made again only when one of
# its channels got events, so a memory row every 2 s does not redraw the reward plot.
EVENT_VIEWS = (
    (reward_series, {"epoch", "eval"}),
    (memory_series, {"memory"}),
    (notice_text, {"warning"}),
    (live_text, {"memory", "epoch", "eval"}),
)
