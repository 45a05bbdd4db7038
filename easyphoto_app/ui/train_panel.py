"""Training panel (inside the Photos & Training tab): start, stop, resume, progress and loss plot."""

from __future__ import annotations

import gradio as gr

from easyphoto_app.model_defaults import panel_defaults
from easyphoto_app.settings import help_of
from easyphoto_app.ui.common import Context
from easyphoto_app.ui.job_view import job_controls, series


def build(ctx: Context, user: gr.Textbox) -> dict:
    cfg = panel_defaults(ctx.settings)
    gr.Markdown(
        "### Train the face LoRA\nUses the accepted faces above. On a GPU this takes 10-30 minutes; "
        "on the built-in demo model a few minutes on the CPU."
    )
    with gr.Accordion("Advanced", open=False, elem_id="train-advanced"):
        with gr.Row():
            steps = gr.Number(
                value=cfg.max_train_steps,
                precision=0,
                label="Steps",
                info="0 = min(200 x photos, 800).",
                elem_id="train-steps",
            )
            rank = gr.Number(
                value=cfg.rank,
                precision=0,
                label="Rank",
                info="LoRA size; lower uses less memory.",
                elem_id="train-rank",
            )
            alpha = gr.Number(value=cfg.lora_alpha, label="Alpha", info="Strength scale = alpha / rank.")
        with gr.Row():
            lr = gr.Number(value=cfg.learning_rate, label="Learning rate", info=help_of(cfg, "learning_rate"))
            resolution = gr.Number(
                value=cfg.resolution, precision=0, label="Resolution", info="The demo model trains at its own size."
            )
            save_every = gr.Number(
                value=cfg.checkpointing_steps,
                precision=0,
                label="Checkpoint every N steps",
                elem_id="train-save-every",
                info=help_of(cfg, "checkpointing_steps"),
            )
        te = gr.Checkbox(
            value=cfg.train_text_encoder,
            label="Also train the text encoder (more memory)",
            info=help_of(cfg, "train_text_encoder"),
            elem_id="train-text-encoder",
        )

    fields = {
        "max_train_steps": steps,
        "rank": rank,
        "lora_alpha": alpha,
        "learning_rate": lr,
        "resolution": resolution,
        "checkpointing_steps": save_every,
        "train_text_encoder": te,
    }

    def views():
        with gr.Row():
            plot = gr.LinePlot(
                x="x",
                y="value",
                color="series",
                title="Training loss",
                x_title="step",
                y_title="loss",
                height=240,
                elem_id="train-plot",
            )
            likeness = gr.LinePlot(
                x="x",
                y="value",
                color="series",
                title="Likeness at each checkpoint",
                x_title="step",
                y_title="likeness",
                height=240,
                elem_id="train-likeness-plot",
            )
        return [
            (plot, lambda events: series(events, "progress", "step", ["loss"]), {"progress"}),
            (likeness, validation_series, {"validation"}),
        ]

    return job_controls(ctx, "train", user, "train", fields, start_label="Start training", layout_views=views)


def validation_series(events: list[dict]):
    """The validation images' mean likeness (the best checkpoint by it is the LoRA written) and their face rate."""
    rows = [
        {**e, "likeness": e["score"], "face rate": 1.0 - e.get("no_face_rate", 1.0)}
        for e in events
        if e.get("kind") == "validation"
    ]
    return series(rows, "metric", "step", ["likeness", "face rate"])
