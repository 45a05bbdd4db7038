"""Settings tab: base model choice and download, doctor output, data folder."""

from __future__ import annotations

import dataclasses

import gradio as gr

from easyphoto_app import doctor
from easyphoto_app.controlnet import CANNY_ABOUT, ensure_controlnet
from easyphoto_app.device import pick_device
from easyphoto_app.faces import CHOICES as FACE_CHOICES
from easyphoto_app.faces.insight import INSIGHTFACE_LICENCE
from easyphoto_app.precision import CHOICES, pick_precision
from easyphoto_app.settings import help_of, save_settings
from easyphoto_app.ui.common import Context, friendly, model_banner


def build(ctx: Context, banner: gr.Markdown) -> dict:
    gr.Markdown(
        f"**Data folder:** `{ctx.settings.data_dir}` (photos, LoRAs, outputs, logs). "
        "Change it with `--data-dir` or the `EASYPHOTO_HOME` environment variable."
    )
    with gr.Row():
        model = gr.Textbox(
            value=ctx.settings.app.model,
            label="Base model",
            scale=3,
            elem_id="settings-model",
            info="A Hugging Face id (default: SD 1.5), a diffusers folder, a .safetensors SD 1.5 or SDXL checkpoint or "
            "a folder of them (a WebUI's models/Stable-diffusion: its checkpoints are listed), or 'demo'.",
        )
        load = gr.Button("Use and load this model", scale=1, elem_id="settings-load")
    precision = gr.Dropdown(
        list(CHOICES),
        value=ctx.settings.app.precision,
        label="Precision",
        elem_id="settings-precision",
        info=help_of(ctx.settings.app, "precision") + " Applies to the next job and image.",
    )
    faces = gr.Dropdown(
        list(FACE_CHOICES),
        value=ctx.settings.faces.backend,
        label="Face recognizer",
        elem_id="settings-faces",
        info="auto: insightface when its models are here, else dlib (installed with the app, free to use). "
        f"Choosing insightface downloads its buffalo_l models (about 280 MB) on the next photo check: "
        f"{INSIGHTFACE_LICENCE}",
    )
    structure = gr.Checkbox(
        value=ctx.settings.portrait.controlnet,
        label="Portraits: keep the template's outlines (ControlNet canny)",
        elem_id="settings-controlnet",
        info=f"Lets higher strengths follow the template's pose and features. {CANNY_ABOUT}, when turned on.",
    )
    status = gr.Markdown(elem_id="settings-status")
    check = gr.Button("Run doctor", elem_id="settings-doctor")
    report = gr.Markdown(elem_id="settings-doctor-report")

    @friendly
    def on_load(spec, progress=gr.Progress(track_tqdm=True)):
        """Load first; only a model that loaded is saved (a typo must not become the setting every job uses)."""
        progress(0, desc="Resolving / downloading the model")
        trial = dataclasses.replace(
            ctx.settings, app=dataclasses.replace(ctx.settings.app, model=spec.strip() or "demo")
        )
        resolved = ctx.pipelines.get(trial).model
        ctx.settings.app.model = trial.app.model
        save_settings(ctx.settings)
        ctx.refresh_job_args()
        message = (
            resolved.note if resolved.is_demo and resolved.note else f"{resolved.note} Loaded {resolved.label}.".strip()
        )
        return message, model_banner(ctx)

    def on_doctor():
        return doctor.render_markdown(doctor.check(ctx.settings))

    @friendly
    def on_precision(choice):
        chosen = pick_precision(choice, pick_device(ctx.settings.app.device))  # refuses bf16 on a GPU without it
        ctx.settings.app.precision = choice
        save_settings(ctx.settings)
        ctx.refresh_job_args()
        return f"Precision: {choice} -> {chosen.name} ({chosen.reason})."

    @friendly
    def on_faces(choice):
        ctx.settings.faces.backend = choice
        save_settings(ctx.settings)
        return f"Face recognizer: {choice}. It applies from the next photo check (Photos tab: add or re-check photos)."

    @friendly
    def on_structure(on, progress=gr.Progress(track_tqdm=True)):
        if on:
            progress(0, desc="Downloading ControlNet canny (once)")
            ensure_controlnet(pick_device(ctx.settings.app.device))  # a refusal leaves the setting off
        ctx.settings.portrait.controlnet = bool(on)
        save_settings(ctx.settings)
        return f"Structure control for portraits: {'on' if on else 'off'}."

    structure.input(on_structure, structure, status, concurrency_limit=1).then(
        lambda: ctx.settings.portrait.controlnet, None, structure
    )
    loaded = load.click(on_load, model, [status, banner], concurrency_limit=1)
    settings_tab_shown = (lambda shown: model_field_on_show(shown, ctx.settings.app.model), model)
    faces.change(on_faces, faces, status)
    precision.change(on_precision, precision, status)
    check.click(on_doctor, None, report)
    return {"on_show": settings_tab_shown, "show_inputs": model, "model_loaded": loaded}


def model_field_on_show(shown: str, in_use: str):
    """The model field shows the model in use (after a reload it may differ from the page's first value), but is left
    alone when it already does: the answer can land after the user started typing, and must not erase it."""
    return gr.update() if shown == in_use else in_use
