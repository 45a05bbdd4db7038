"""Generate tab: prompt + style -> portraits on the cached pipeline (with the user's LoRAs)."""

from __future__ import annotations

import gradio as gr

from easyphoto_app.generate import SCHEDULERS, generate, load_styles, with_overrides
from easyphoto_app.ui.common import Context, friendly, user_choices


def build(ctx: Context) -> dict:
    cfg = ctx.settings.generate
    with gr.Row():
        with gr.Column(scale=2):
            user = gr.Dropdown(["(base model only)"] + user_choices(ctx), value="(base model only)", label="User",
                               info="Whose face LoRA to use. 'base model only' generates without any LoRA.",
                               allow_custom_value=False, elem_id="gen-user")
            style = gr.Dropdown(list(load_styles()), value=cfg.style, label="Style", info="Added to the trigger words when the prompt is empty.")
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="Empty: trigger words + style. WebUI tags work: <lora:NAME:0.8>",
                                info="Extra LoRAs: <lora:name:weight>.", elem_id="gen-prompt")
            negative = gr.Textbox(label="Negative prompt", value=cfg.negative_prompt, lines=1)
            with gr.Row():
                lora_w = gr.Slider(0, 1.5, value=cfg.lora_weight, step=0.05, label="Face LoRA weight")
                rl_w = gr.Slider(0, 1.5, value=cfg.rl_weight, step=0.05, label="RL LoRA weight",
                                 info="Used when this user has an RL (DDPO) LoRA.")
            use_rl = gr.Checkbox(value=True, label="Use the RL LoRA when there is one")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    num = gr.Slider(1, 8, value=cfg.num, step=1, label="Images")
                    seed = gr.Number(value=cfg.seed, precision=0, label="Seed", info="-1 = random; the seed used is shown below.")
                with gr.Row():
                    steps = gr.Slider(1, 100, value=cfg.steps, step=1, label="Steps")
                    guidance = gr.Slider(1, 15, value=cfg.cfg, step=0.5, label="CFG scale")
                with gr.Row():
                    width = gr.Slider(256, 1024, value=cfg.width, step=64, label="Width")
                    height = gr.Slider(256, 1024, value=cfg.height, step=64, label="Height")
                scheduler = gr.Dropdown(list(SCHEDULERS), value=cfg.scheduler, label="Sampler")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="gen-run")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Results", columns=2, height=520, elem_id="gen-gallery")
            info = gr.Markdown(elem_id="gen-info")

    @friendly
    def on_generate(user_v, style_v, prompt_v, neg_v, lw, rw, use_rl_v, num_v, seed_v, steps_v, cfg_v, w_v, h_v, sched_v,
                    progress=gr.Progress()):
        request = with_overrides(cfg, style=style_v, prompt=prompt_v, negative_prompt=neg_v, lora_weight=lw, rl_weight=rw,
                                 num=int(num_v), seed=int(seed_v), steps=int(steps_v), cfg=float(cfg_v), width=int(w_v),
                                 height=int(h_v), scheduler=sched_v)
        who = None if user_v in (None, "", "(base model only)") else user_v
        if not ctx.generate_lock.acquire(blocking=False):
            raise gr.Error("Another generation is running; wait for it to finish.")
        try:
            progress(0, desc="Loading the model (first time only)")
            pipe, model = ctx.pipelines.get(ctx.settings.app.model, ctx.settings.data_dir, ctx.settings.app.device)
            result = generate(pipe, model, ctx.ws, request, user=who, use_rl=use_rl_v,
                              progress=lambda s, t: progress((s, t), desc="Generating"))
        finally:
            ctx.generate_lock.release()
        items = [(str(p), f"seed {s}") for p, s in zip(result.paths, result.seeds)]
        text = f"{len(items)} image(s) in {result.seconds:.1f} s, seeds {', '.join(map(str, result.seeds))}. Saved under `outputs/`."
        if model.is_demo:
            text += f"\n\n_{model.note or model.label}_"
        return items, text

    run.click(on_generate, [user, style, prompt, negative, lora_w, rl_w, use_rl, num, seed, steps, guidance, width, height, scheduler],
              [gallery, info], api_name="generate", concurrency_limit=1)
    return {"user": user}
