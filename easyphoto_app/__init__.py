"""EasyPhoto: a local AI portrait studio (faces -> face LoRA -> RL -> portraits).

The core package is importable without gradio; heavy libraries (torch, diffusers)
are imported inside the functions that need them so that start-up stays fast.
"""

__version__ = "0.1.0"
