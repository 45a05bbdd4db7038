"""Generate tab: prompt + style -> portraits on the cached pipeline (with the user's LoRAs)."""

from __future__ import annotations

import gradio as gr

from easyphoto_app.errors import UserError
from easyphoto_app.faces.likeness import SCALE_WORDS
from easyphoto_app.generate import SCHEDULERS, compare, generate, load_styles, plan_loras, with_overrides
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

BASE_ONLY = "(base model only)"


def build(ctx: Context, person: gr.Textbox) -> dict:
    """`person`: the user id typed in the Photos tab, chosen here when the tab is shown."""
    cfg = panel_defaults(ctx.settings, "generate")  # the model's own size (SDXL's 1024 px)
    with gr.Row():
        with gr.Column(scale=2):
            user = gr.Dropdown(
                [BASE_ONLY] + user_choices(ctx),
                value=BASE_ONLY,
                label="User",
                info="Whose face LoRA to use. 'base model only' generates without any LoRA.",
                allow_custom_value=False,
                elem_id="gen-user",
            )
            style = gr.Dropdown(
                list(load_styles()),
                value=cfg.style,
                label="Style",
                info="Added to the trigger words when the prompt is empty.",
            )
            prompt = gr.Textbox(
                label="Prompt",
                lines=2,
                placeholder="Empty: trigger words + style. WebUI tags work: <lora:NAME:0.8>",
                info="Extra LoRAs: <lora:name:weight>.",
                elem_id="gen-prompt",
            )
            negative = gr.Textbox(label="Negative prompt", value=cfg.negative_prompt, lines=1)
            with gr.Row():
                lora_w = gr.Slider(
                    0, 1.5, value=cfg.lora_weight, step=0.05, label="Face LoRA weight", info=help_of(cfg, "lora_weight")
                )
                rl_w = gr.Slider(
                    0,
                    1.5,
                    value=cfg.rl_weight,
                    step=0.05,
                    label="RL LoRA weight",
                    info="Used when this user has an RL (DDPO) LoRA.",
                )
            use_rl = gr.Checkbox(
                value=True, label="Use the RL LoRA when there is one", info="Off: the face LoRA alone (like --no-rl)."
            )
            ip_w = identity_slider(cfg, "gen-ip-scale")
            with gr.Accordion("Advanced", open=False, elem_id="gen-advanced"):
                with gr.Row():
                    num = gr.Slider(
                        1, 8, value=cfg.num, step=1, label="Images", info=help_of(cfg, "num"), elem_id="gen-num"
                    )
                    seed = gr.Number(
                        value=cfg.seed, precision=0, label="Seed", info="-1 = random; the seed used is shown below."
                    )
                with gr.Row():
                    steps = gr.Slider(
                        1,
                        100,
                        value=cfg.num_inference_steps,
                        step=1,
                        label="Steps",
                        elem_id="gen-steps",
                        info=help_of(cfg, "num_inference_steps"),
                    )
                    guidance = gr.Slider(
                        1,
                        15,
                        value=cfg.guidance_scale,
                        step=0.5,
                        label="CFG scale",
                        info=help_of(cfg, "guidance_scale"),
                    )
                with gr.Row():
                    # any multiple of 8 the settings may hold; SDXL's sizes go past 1024 (1152x896, 1216x832)
                    width = gr.Slider(
                        64, 2048, value=cfg.width, step=8, label="Width", info="The demo model always makes 128 px."
                    )
                    height = gr.Slider(64, 2048, value=cfg.height, step=8, label="Height", info=help_of(cfg, "height"))
                scheduler = gr.Dropdown(list(SCHEDULERS), value=cfg.scheduler, label="Sampler")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                compare_btn = gr.Button("Compare: face LoRA vs face + RL", elem_id="gen-compare")
                cancel = gr.Button("Cancel", variant="stop", elem_id="gen-cancel")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Results", columns=2, height=520, elem_id="gen-gallery")
            info = gr.Markdown(elem_id="gen-info")

    def request_of(style_v, prompt_v, neg_v, lw, rw, num_v, seed_v, steps_v, cfg_v, w_v, h_v, sched_v, ip_v):
        return with_overrides(
            cfg,
            style=style_v,
            prompt=prompt_v,
            negative_prompt=neg_v,
            lora_weight=lw,
            rl_weight=rw,
            num=int(num_v),
            seed=int(seed_v),
            num_inference_steps=int(steps_v),
            guidance_scale=float(cfg_v),
            width=int(w_v),
            height=int(h_v),
            scheduler=sched_v,
            ip_scale=float(ip_v),
        )

    @friendly
    def on_generate(user_v, use_rl_v, *values, progress=gr.Progress(track_tqdm=True)):
        request = request_of(*values)
        who = None if user_v in (None, "", BASE_ONLY) else user_v
        plan_loras(ctx.ws, request, who, use_rl_v)
        result, model = with_pipeline(
            ctx,
            progress,
            lambda loaded: generate(
                loaded,
                ctx.ws,
                request,
                user=who,
                use_rl=use_rl_v,
                should_stop=ctx.cancel_generate.is_set,
                progress=lambda s, t: progress((s, t), desc="Generating"),
            ),
        )
        items = list(zip(map(str, result.paths), result.captions()))
        text = (
            f"{len(items)} image(s), {result.mode}, in {result.seconds:.1f} s, "
            f"seeds {', '.join(map(str, result.seeds))}. "
            f"Saved under `outputs/`."
        )
        if result.note:
            text += f"\n\n⚠️ {result.note}"
        return items, footer(ctx, model, text)

    @friendly
    def on_compare(user_v, *values, progress=gr.Progress(track_tqdm=True)):
        if user_v in (None, "", BASE_ONLY):
            raise UserError("Pick a user to compare their face LoRA with and without the RL LoRA.")
        request = request_of(*values)
        c, model = with_pipeline(
            ctx,
            progress,
            lambda loaded: compare(
                loaded,
                ctx.ws,
                request,
                user_v,
                should_stop=ctx.cancel_generate.is_set,
                progress=lambda s, t: progress((s, t), desc="Comparing"),
            ),
        )
        items = c.items()
        text = (
            f"Left: face LoRA alone. Right: face + RL LoRA. Same seeds; likeness: {SCALE_WORDS} "
            "(as `likeness` prints it)."
        )
        return items, footer(ctx, model, text)

    def on_cancel():
        ctx.cancel_generate.set()

    values = [style, prompt, negative, lora_w, rl_w, num, seed, steps, guidance, width, height, scheduler, ip_w]
    run.click(on_generate, [user, use_rl, *values], [gallery, info], api_name="generate", concurrency_limit=1)
    compare_btn.click(on_compare, [user, *values], [gallery, info], api_name="compare", concurrency_limit=1)
    cancel.click(on_cancel, None, None, queue=False)
    on_show = (lambda person_v, user_v: user_update(ctx, person_v, user_v, first=[BASE_ONLY]), user)
    return {"on_show": on_show, "show_inputs": [person, user]}
