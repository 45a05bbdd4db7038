"""Stable Diffusion 1.5: one CLIP text encoder, no added conditions, WebUI's `lora_te_` prefix."""

from __future__ import annotations

from easyphoto_app.families.conditioning import Cond
from easyphoto_app.settings import ASSETS

NAME = "sd15"
LABEL = "Stable Diffusion 1.5"
CONFIG = ASSETS / "sd15"  # configs and tokenizer: single files load offline
PIPELINES = {
    "txt2img": "StableDiffusionPipeline",
    "img2img": "StableDiffusionImg2ImgPipeline",
    "inpaint": "StableDiffusionInpaintPipeline",
}
CHECKPOINT_KINDS = ("v1",)  # diffusers' name for an SD 1.x single file
WEBUI_VERSION = "sd_v1"  # kohya's ss_base_model_version
LOAD_KWARGS = {"safety_checker": None, "requires_safety_checker": False}  # from_pretrained / from_single_file
TEXT_ENCODERS = ("text_encoder",)
DEFAULTS: dict = {}  # the settings' own defaults are SD 1.5's


def encode(pipe, prompts: list[str], device, resolution: int) -> Cond:
    """The prompts' hidden states (with gradients when the text encoder trains)."""
    return Cond(pipe.encode_prompt(prompts, device, 1, False)[0])


def kohya_key(key: str) -> str:
    return key.replace("lora_te1_", "lora_te_", 1)  # WebUIs name SD 1.x's only text encoder lora_te
