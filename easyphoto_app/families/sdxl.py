"""SDXL: two text encoders whose hidden states are joined, a pooled embedding and size `time_ids` as added
conditions, kohya's `lora_te1_` / `lora_te2_` prefixes, 1024 px.

SDXL's autoencoder overflows in fp16 (its config says `force_upcast`): it decodes in fp32
(`precision.vae_in_safe_dtype`)."""

from __future__ import annotations

from easyphoto_app.families.conditioning import Cond
from easyphoto_app.settings import ASSETS

NAME = "sdxl"
LABEL = "SDXL"
CONFIG = ASSETS / "sdxl"
PIPELINES = {
    "txt2img": "StableDiffusionXLPipeline",
    "img2img": "StableDiffusionXLImg2ImgPipeline",
    "inpaint": "StableDiffusionXLInpaintPipeline",
}
CHECKPOINT_KINDS = ("xl_base",)
WEBUI_VERSION = "sdxl_base_v1-0"
LOAD_KWARGS = {}  # from_pretrained / from_single_file
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
# Every job at the model's native size (model_defaults.native_size; 1024 px here when its configs are not at hand):
# SDXL paints poorly at 512. lr 1e-4 as diffusers' SDXL LoRA examples; rank 32 keeps the file near SD 1.5's rank-128
# size (SDXL's attention layers are wider and more numerous)
DEFAULTS = {
    "train": {"resolution": 1024, "rank": 32, "lora_alpha": 16.0, "learning_rate": 1e-4},
    "rl": {"resolution": 1024},
    "generate": {"width": 1024, "height": 1024},
}


def encode(pipe, prompts: list[str], device, resolution: int) -> Cond:
    """Both encoders' hidden states, the pooled embedding and the time_ids of a square, uncropped image. An empty
    prompt is zeros where the model says so (`force_zeros_for_empty_prompt`, as SDXL's pipeline does)."""
    import torch

    hidden, _, pooled, _ = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    if all(not p for p in prompts) and pipe.config.get("force_zeros_for_empty_prompt", True):
        hidden, pooled = torch.zeros_like(hidden), torch.zeros_like(pooled)
    size = (resolution, resolution)
    time_ids = pipe._get_add_time_ids(
        size, (0, 0), size, dtype=hidden.dtype, text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim
    )
    return Cond(hidden, pooled, time_ids.to(device).expand(len(prompts), -1))


def kohya_key(key: str) -> str:
    return key
