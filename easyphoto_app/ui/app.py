"""The Blocks layout and the one launch() entry."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from easyphoto_app.settings import Settings
from easyphoto_app.ui import gallery_tab, generate_tab, photos_tab, rl_tab, settings_tab
from easyphoto_app.ui.common import Context, model_banner

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[2] / "assets"


def build_app(ctx: Context) -> gr.Blocks:
    with gr.Blocks(title="EasyPhoto", analytics_enabled=False) as demo:
        gr.Markdown("# EasyPhoto\nUpload 5-20 photos of one person, train a face LoRA, improve it with RL, generate portraits.")
        banner = gr.Markdown(model_banner(ctx), elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Photos & Training", id="photos"):
                photos_tab.build(ctx)
            with gr.Tab("RL", id="rl"):
                rl_tab.build(ctx)
            with gr.Tab("Generate", id="generate"):
                generate_tab.build(ctx)
            with gr.Tab("Gallery", id="gallery"):
                gallery_tab.build(ctx)
            with gr.Tab("Settings", id="settings"):
                settings_tab.build(ctx, banner)
        demo.load(lambda: model_banner(ctx), None, banner)
    return demo


def launch(settings: Settings, host: str, port: int, auth=None, open_browser: bool = True, block: bool = True):
    ctx = Context.create(settings)
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=2)
    css_file = ASSETS / "style.css"
    print(f"EasyPhoto is starting on http://{host}:{port}  (data: {settings.data_dir})", flush=True)
    return demo.launch(
        server_name=host, server_port=port, auth=auth, inbrowser=open_browser, prevent_thread_lock=not block,
        allowed_paths=[str(settings.data_dir)], ssr_mode=False, mcp_server=False, quiet=True,
        css_paths=[css_file] if css_file.exists() else None, favicon_path=None, footer_links=[],
    )
