"""Portrait tab: a template photo -> the user's face painted into it, candidates ranked by likeness."""

from __future__ import annotations

import gradio as gr

from easyphoto_app import group
from easyphoto_app import portrait as core
from easyphoto_app.device import pick_device
from easyphoto_app.errors import UserError
from easyphoto_app.faces import get_backend
from easyphoto_app.faces.likeness import SCALE_WORDS
from easyphoto_app.generate import with_overrides
from easyphoto_app.model_defaults import panel_defaults
from easyphoto_app.settings import help_of
from easyphoto_app.ui.common import (
    Context,
    footer,
    friendly,
    identity_slider,
    user_choices,
    user_update,
    with_pipeline,
)

LARGEST = -1
MAX_PEOPLE = 8  # pickers for several people: one per numbered face of the template, up to this many
KEEP = ("keep as is", "")


def build(ctx: Context, person: gr.Textbox) -> dict:
    """`person`: the user id typed in the Photos tab, chosen here when the tab is shown."""
    cfg, gen = ctx.settings.portrait, panel_defaults(ctx.settings, "generate")  # the model's own size (SDXL's 1024 px)
    with gr.Row():
        with gr.Column(scale=2):
            user = gr.Dropdown(
                user_choices(ctx),
                label="User",
                info="Whose face: their face LoRA (and RL LoRA).",
                allow_custom_value=False,
                elem_id="portrait-user",
            )
            upload = gr.File(label="Add a template photo", file_types=["image"], elem_id="portrait-upload")
            with gr.Row():
                template = gr.Dropdown(
                    _template_names(ctx),
                    label="Template",
                    info="Photos you added (kept in templates/ in the data folder).",
                    elem_id="portrait-template",
                    scale=3,
                )
                delete = gr.Button("Delete template", size="sm", variant="stop", scale=1)
            preview = gr.Image(
                label="Faces found (the painted one in green; boxes that are not faces crossed out in red)",
                interactive=False,
                height=260,
                elem_id="portrait-preview",
            )
            faces_note = gr.Markdown(elem_id="portrait-faces-note")
            face = gr.Dropdown(
                [("the largest", LARGEST)],
                value=LARGEST,
                label="Face",
                info="Which face to paint, numbered from the left as in the preview.",
                elem_id="portrait-face",
            )
            with gr.Accordion("Several people (group photos)", open=False, elem_id="portrait-people"):
                gr.Markdown(
                    "Give other numbered faces a person of their own: each is painted with their own LoRAs "
                    "and photos. Faces left as they are keep every pixel."
                )
                pickers = [
                    gr.Dropdown(
                        [KEEP, *user_choices(ctx)],
                        value="",
                        label=f"Face {i}",
                        visible=False,
                        elem_id=f"portrait-person-{i}",
                    )
                    for i in range(MAX_PEOPLE)
                ]
            strength = gr.Slider(
                0.1,
                1.0,
                value=cfg.strength,
                step=0.05,
                label="Strength",
                info=help_of(cfg, "strength"),
                elem_id="portrait-strength",
            )
            fusion = gr.Checkbox(
                value=cfg.fusion,
                label="Face fusion (the person's own photo blended in)",
                info=help_of(cfg, "fusion"),
                elem_id="portrait-fusion",
            )
            with gr.Row():
                num = gr.Slider(1, 8, value=cfg.num, step=1, label="Candidates", info=help_of(cfg, "num"))
                seed = gr.Number(
                    value=cfg.seed, precision=0, label="Seed", info="-1 = random; each image shows its seed."
                )
            with gr.Accordion("Advanced", open=False, elem_id="portrait-advanced"):
                with gr.Row():
                    lora_w = gr.Slider(0, 1.5, value=gen.lora_weight, step=0.05, label="Face LoRA weight")
                    rl_w = gr.Slider(0, 1.5, value=gen.rl_weight, step=0.05, label="RL LoRA weight")
                ip_w = identity_slider(gen, "portrait-ip-scale")
                fusion_w = gr.Slider(
                    0,
                    1,
                    value=cfg.fusion_weight,
                    step=0.05,
                    label="Fusion after painting",
                    info=help_of(cfg, "fusion_weight"),
                    elem_id="portrait-fusion-weight",
                )
                use_rl = gr.Checkbox(value=True, label="Use the RL LoRA when there is one")
                steps = gr.Slider(
                    1,
                    100,
                    value=gen.num_inference_steps,
                    step=1,
                    label="Steps",
                    info="Steps at strength 1; a strength of 0.45 runs 45% of them.",
                    elem_id="portrait-steps",
                )
            with gr.Row():
                run = gr.Button("Paint portraits", variant="primary", elem_id="portrait-run")
                cancel = gr.Button("Cancel", variant="stop")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Portraits, most alike first", columns=2, height=520, elem_id="portrait-gallery")
            info = gr.Markdown(elem_id="portrait-info")

    @friendly
    def on_upload(file):
        if not file:
            return gr.skip(), gr.skip()
        kept = core.add_template(ctx.ws, file, _backend(ctx))
        return gr.update(choices=_template_names(ctx), value=kept.name), None

    @friendly
    def on_template(name):
        only_largest = gr.update(choices=[("the largest", LARGEST)], value=LARGEST)
        if not name:
            return None, only_largest, "", *people_pickers(0)
        rgb = core.load_template(core.resolve_template(ctx.ws, name))
        faces, ignored = core.boxes_left_to_right(_backend(ctx), rgb)
        note = ignored_note(ignored)
        if not faces:
            gr.Warning("No face found in this template: choose a photo where one face is clearly visible.")
            return core.annotate(rgb, [], None, ignored), only_largest, note, *people_pickers(0)
        largest, _ = core.choose_face(faces, LARGEST)
        choices = [("the largest", LARGEST)] + [
            (f"face {i}" + (" (largest)" if i == largest else ""), i) for i in range(len(faces))
        ]
        return (
            core.annotate(rgb, faces, largest, ignored),
            gr.update(choices=choices, value=LARGEST),
            note,
            *people_pickers(len(faces) if len(faces) > 1 else 0),
        )

    @friendly
    def on_delete(name):
        if not name:
            raise UserError("Choose a template to delete.")
        core.delete_template(ctx.ws, name)
        return gr.update(choices=_template_names(ctx), value=None)

    @friendly
    def on_run(
        user_v,
        name,
        face_v,
        strength_v,
        num_v,
        seed_v,
        lw,
        rw,
        use_rl_v,
        steps_v,
        fusion_v,
        fusion_w_v,
        ip_v,
        *people,
        progress=gr.Progress(track_tqdm=True),
    ):
        picked = [(i, who) for i, who in enumerate(people) if who]
        if not user_v and not picked:
            raise UserError("Choose whose face to paint (User), or a person for each face (Several people).")
        if not name:
            raise UserError("Add or choose a template photo first.")
        path = core.resolve_template(ctx.ws, name)
        user_v, face_v, others = group.main_and_others(user_v, int(face_v), picked)
        request = with_overrides(
            cfg,
            strength=float(strength_v),
            num=int(num_v),
            seed=int(seed_v),
            face_index=int(face_v),
            fusion=bool(fusion_v),
            fusion_weight=float(fusion_w_v),
        )
        gen_request = with_overrides(
            gen, lora_weight=lw, rl_weight=rw, num_inference_steps=int(steps_v), ip_scale=float(ip_v)
        )

        job = core.plan(
            ctx.ws,
            gen_request,
            request,
            user_v,
            path,
            _backend(ctx),
            use_rl=use_rl_v,
            device=pick_device(ctx.settings.app.device),
            others=others,
        )
        result, model = with_pipeline(
            ctx,
            progress,
            lambda loaded: core.paint(
                loaded,
                ctx.ws,
                job,
                should_stop=ctx.cancel_generate.is_set,
                progress=lambda s, t: progress((s, t), desc="Painting"),
            ),
        )
        items = list(zip(map(str, result.paths), result.captions()))
        text = (
            f"{len(items)} portrait(s), {result.mode}, in {result.seconds:.1f} s, {result.where()} of the template, "
            "most alike "
            f"first (likeness: {SCALE_WORDS}{result.ranked_by()}). Saved under `outputs/`."
        )
        if job.control:
            text += " The template's outlines were held by ControlNet canny (Settings)."
        text += "".join(f"\n\n⚠️ {note}" for note in result.notes)
        return items, footer(ctx, model, text)

    upload.upload(on_upload, upload, [template, upload])
    template.change(on_template, template, [preview, face, faces_note, *pickers])
    delete.click(on_delete, template, template)
    run.click(
        on_run,
        [user, template, face, strength, num, seed, lora_w, rl_w, use_rl, steps, fusion, fusion_w, ip_w, *pickers],
        [gallery, info],
        api_name="portrait",
        concurrency_limit=1,
    )
    cancel.click(ctx.cancel_generate.set, None, None, queue=False)

    def on_show(person_v, user_v):
        people = [gr.update(choices=[KEEP, *user_choices(ctx)]) for _ in pickers]
        return user_update(ctx, person_v, user_v), gr.update(choices=_template_names(ctx)), *people

    return {"on_show": (on_show, [user, template, *pickers]), "show_inputs": [person, user]}


def people_pickers(faces: int) -> list:
    """One person picker per numbered face (none for a template of one face), each back to 'keep as is'."""
    return [gr.update(visible=i < min(faces, MAX_PEOPLE), value="") for i in range(MAX_PEOPLE)]


def ignored_note(ignored) -> str:
    """Why the crossed-out boxes of the preview are never painted."""
    if not ignored:
        return ""
    return (
        f"Ignored {len(ignored)} box(es) crossed out in red: {ignored[0].ignored}. They are never painted, "
        "trained on or scored."
    )


def _template_names(ctx: Context) -> list[str]:
    return [p.name for p in core.list_templates(ctx.ws)]


def _backend(ctx: Context):
    return get_backend(ctx.settings.faces.backend, ctx.settings.data_dir)
