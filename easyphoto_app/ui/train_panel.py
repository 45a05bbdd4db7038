"""Training panel (inside the Photos & Training tab): start, stop, resume, progress and loss plot."""

from __future__ import annotations

import gradio as gr

from easyphoto_app.model_defaults import panel_defaults
from easyphoto_app.settings import TrainConfig, config_flags, help_of
from easyphoto_app.ui.common import Context
from easyphoto_app.ui.job_view import job_controls, series


def build(ctx: Context, user: gr.Textbox) -> dict:
    cfg = panel_defaults(ctx.settings)
    gr.Markdown("### Train the face LoRA\nUses the accepted faces above. On a GPU this takes 10-30 minutes; "
                "on the demo model a few seconds.")
    with gr.Accordion("Advanced", open=False, elem_id="train-advanced"):
        with gr.Row():
            steps = gr.Number(value=cfg.steps, precision=0, label="Steps", info="0 = min(200 x photos, 800).", elem_id="train-steps")
            rank = gr.Number(value=cfg.rank, precision=0, label="Rank", info="LoRA size; lower uses less memory.", elem_id="train-rank")
            alpha = gr.Number(value=cfg.alpha, label="Alpha", info="Strength scale = alpha / rank.")
        with gr.Row():
            lr = gr.Number(value=cfg.lr, label="Learning rate", info=help_of(cfg, "lr"))
            resolution = gr.Number(value=cfg.resolution, precision=0, label="Resolution", info="The demo model trains at its own size.")
            save_every = gr.Number(value=cfg.save_every, precision=0, label="Checkpoint every N steps", elem_id="train-save-every",
                                   info=help_of(cfg, "save_every"))
        te = gr.Checkbox(value=cfg.train_text_encoder, label="Also train the text encoder (more memory)",
                         info=help_of(cfg, "train_text_encoder"), elem_id="train-text-encoder")

    fields = ["steps", "rank", "alpha", "lr", "resolution", "save_every", "train_text_encoder"]

    def views():
        plot = gr.LinePlot(x="x", y="value", color="series", title="Training loss", x_title="step", y_title="loss",
                           height=240, elem_id="train-plot")
        return [(plot, lambda events: series(events, "progress", "step", ["loss"]))]

    return job_controls(ctx, "train", user, [steps, rank, alpha, lr, resolution, save_every, te],
                        lambda *values: config_flags(TrainConfig, fields, values),
                        start_label="Start training", layout_views=views)
