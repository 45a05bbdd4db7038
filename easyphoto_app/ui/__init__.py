"""The Gradio UI: one module per tab, each thin over the core."""
