"""The Blocks layout and the one launch() entry."""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading

import gradio as gr

from easyphoto_app.settings import ASSETS, Settings
from easyphoto_app.ui import gallery_tab, generate_tab, photos_tab, portrait_tab, rl_tab, settings_tab
from easyphoto_app.ui.common import Context, model_banner

log = logging.getLogger(__name__)


def refresh_on_show(tab: gr.Tab, built: dict) -> None:
    """What changes while the app runs (users, dates, the model in use) is refreshed when its tab is shown."""
    fn, output = built["on_show"]
    tab.select(fn, built.get("show_inputs"), output, queue=False, show_progress="hidden")


def build_app(ctx: Context) -> gr.Blocks:
    with gr.Blocks(title="EasyPhoto", analytics_enabled=False) as demo:
        gr.Markdown(
            "# EasyPhoto\nUpload 5-20 photos of one person, train a face LoRA, improve it with RL, generate "
            "portraits or paint the face into a photo of your choice."
        )
        banner = gr.Markdown(model_banner(ctx), elem_id="model-banner")
        with gr.Tabs():
            with gr.Tab("Photos & Training", id="photos"):
                photos = photos_tab.build(ctx)
            with gr.Tab("RL", id="rl"):
                rl = rl_tab.build(ctx)
            with gr.Tab("Generate", id="generate") as gen_tab:
                refresh_on_show(gen_tab, generate_tab.build(ctx, photos["user"]))
            with gr.Tab("Portrait", id="portrait") as portrait:
                refresh_on_show(portrait, portrait_tab.build(ctx, photos["user"]))
            with gr.Tab("Gallery", id="gallery") as gallery:
                refresh_on_show(gallery, gallery_tab.build(ctx))
            with gr.Tab("Settings", id="settings") as settings:
                settings_built = settings_tab.build(ctx, banner)
                refresh_on_show(settings, settings_built)
        share_user_id(photos["user"], rl["user"])
        for fn, outputs in (photos["refresh_defaults"], rl["refresh_defaults"]):
            demo.load(fn, None, outputs, queue=False)
            settings_built["model_loaded"].then(fn, None, outputs, queue=False)
        demo.load(lambda: model_banner(ctx), None, banner)
        # every open tab follows a model change made in another one
        gr.Timer(5.0).tick(lambda: model_banner(ctx), None, banner, show_progress="hidden", queue=False)
    return demo


def share_user_id(*boxes: gr.Textbox) -> None:
    """One person at a time: an id typed in one tab's box is the id in the others (typed: a box filled by a job's
    view does not spread)."""
    n = len(boxes) - 1
    for box in boxes:
        others = [b for b in boxes if b is not box]
        box.input(lambda value: [value] * n, box, others, queue=False, show_progress="hidden")


def stop_jobs_on_exit(ctx: Context) -> None:
    """Closing the app (Ctrl+C, closing the window, SIGTERM) asks a running job to save and stop,
    so no training is left burning the GPU unseen; Resume continues it next time."""

    def stop_job():
        if ctx.jobs.stop():
            log.info("The app is closing: asked the running job to save and stop.")

    atexit.register(stop_job)
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):

        def on_term(*_):
            stop_job()
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)


def launch(settings: Settings, host: str, port: int, auth=None, open_browser: bool = True, block: bool = True):
    ctx = Context.create(settings)
    stop_jobs_on_exit(ctx)
    demo = build_app(ctx)
    demo.queue(default_concurrency_limit=2)
    css_file = ASSETS / "style.css"
    print(f"EasyPhoto is starting on http://{host}:{port}  (data: {settings.data_dir})", flush=True)
    return demo.launch(
        server_name=host,
        server_port=port,
        auth=auth,
        inbrowser=open_browser,
        prevent_thread_lock=not block,
        allowed_paths=[str(settings.data_dir)],
        ssr_mode=False,
        mcp_server=False,
        quiet=True,
        css_paths=[css_file] if css_file.exists() else None,
        favicon_path=None,
        footer_links=[],
    )
