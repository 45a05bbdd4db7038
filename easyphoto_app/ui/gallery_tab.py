"""Built in its own issue; for now it points to the CLI."""

import gradio as gr


def build(ctx):
    gr.Markdown("Not built yet.")
