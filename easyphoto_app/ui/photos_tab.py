"""Photos & Training tab: upload -> faces (accepted, rejected with reasons, reference) -> train."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from easyphoto_app.errors import UserError
from easyphoto_app.faces.prepare import load_record, prepare
from easyphoto_app.ui import train_panel
from easyphoto_app.ui.common import Context, friendly, user_id_hint
from easyphoto_app.workspace import validate_user_id


def _likeness(scores: dict) -> str:
    return f"likeness {scores['likeness']:.2f}" if "likeness" in scores else "likeness n/a"


def faces_view(ctx: Context, user: str, record: dict | None):
    """(accepted gallery items, rejected rows, reference image, summary) from faces.json."""
    if not record:
        return [], [], None, "No photos checked yet."
    accepted = []
    for p in record["photos"]:
        if p["accepted"]:
            s = p["scores"]
            star = "★ reference · " if record.get("reference") and record["reference"]["source"] == p["source"] else ""
            caption = f"{star}{p['source']} · {_likeness(s)} · sharp {s['sharpness']:.2f} · {s['face_px']:.0f}px"
            accepted.append((str(ctx.ws.root / p["crop"]), caption))
    rejected = [[p["source"], p["reason"]] for p in record["photos"] + record.get("skipped", []) if not p["accepted"]]
    ref = str(ctx.ws.root / record["reference"]["crop"]) if record.get("reference") else None
    n = len(accepted)
    summary = f"**{n} face(s) accepted**, {len(rejected)} photo(s) rejected · backend: {record['backend']}."
    if record.get("warning"):
        summary += f"\n\n⚠️ {record['warning'][0].upper()}{record['warning'][1:]}"
    return accepted, rejected, ref, summary


def build(ctx: Context) -> dict:
    with gr.Row():
        user = gr.Textbox(
            label="User id",
            placeholder="e.g. anna",
            elem_id="user-id",
            info="A name for this person: ASCII letters, digits, _ and -.",
        )
        hint = gr.Markdown(user_id_hint(""), elem_id="user-hint")
    with gr.Row():
        with gr.Column(scale=2):
            files = gr.File(
                label="Photos (5-20 of one person; jpg, png, webp, bmp)",
                file_count="multiple",
                type="filepath",
                elem_id="photo-upload",
            )
            check = gr.Button("Add photos and check faces", variant="primary", elem_id="prepare-run")
            remove = gr.Dropdown(
                [], multiselect=True, label="Remove photos", info="Pick photos to drop, then press Remove."
            )
            remove_btn = gr.Button("Remove selected photos", size="sm")
        with gr.Column(scale=1):
            reference = gr.Image(
                label="Reference face (used by the RL reward)", interactive=False, height=220, elem_id="reference"
            )
    summary = gr.Markdown(elem_id="faces-summary")
    accepted = gr.Gallery(label="Accepted faces (hover for scores)", columns=6, height=260, elem_id="accepted")
    rejected = gr.Dataframe(
        headers=["photo", "why it was not used"],
        label="Rejected photos",
        interactive=False,
        wrap=True,
        elem_id="rejected",
        elem_classes=["reject-table"],
    )
    gr.Markdown("---")
    train = train_panel.build(ctx, user)

    def view(user_v: str, record):
        items, rows, ref, text = faces_view(ctx, user_v, record)
        photos = sorted(p["source"] for p in record["photos"]) if record else []
        return items, rows, ref, text, gr.update(choices=photos, value=[])

    @friendly
    def on_check(user_v, paths, progress=gr.Progress()):
        user_v = validate_user_id(user_v)
        progress(0, desc="Checking faces")
        new = [Path(p) for p in (paths or [])]
        try:
            prepare(
                ctx.ws, user_v, new, ctx.settings.faces, progress=lambda d, t: progress((d, t), desc="Checking faces")
            )
        except UserError:
            record = load_record(ctx.ws, user_v)
            if record is None:
                raise
            gr.Warning("No usable photo: see the reasons in the table.")
        return (*view(user_v, load_record(ctx.ws, user_v)), None)

    @friendly
    def on_remove(user_v, names):
        user_v = validate_user_id(user_v)
        if not names:
            raise UserError("Pick the photos to remove first.")
        try:
            prepare(ctx.ws, user_v, [], ctx.settings.faces, remove=names)
        except UserError:
            if load_record(ctx.ws, user_v) is None:
                raise
        return view(user_v, load_record(ctx.ws, user_v))

    def on_user(user_v):
        try:
            record = load_record(ctx.ws, validate_user_id(user_v))
        except UserError:  # an invalid id just shows the hint
            record = None
        return (user_id_hint(user_v), *view(user_v, record))

    outputs = [accepted, rejected, reference, summary, remove]
    user.change(on_user, user, [hint, *outputs], show_progress="hidden")
    check.click(on_check, [user, files], [*outputs, files], api_name="prepare", concurrency_limit=1)
    remove_btn.click(on_remove, [user, remove], outputs)
    return {"user": user, **train}
