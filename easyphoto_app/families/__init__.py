"""Model families: what differs between SD 1.5 and SDXL (pipeline classes, prompt encoding, added conditions, LoRA
key names, defaults) lives in one module each; training, RL, generation and portraits ask the family.

A model of any other kind (SD 2.x, SD3, Flux, a refiner, an inpainting UNet) is named and refused here, from its
model_index.json and UNet config (read before any download) or a single file's keys."""

from __future__ import annotations

import json
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.families import sd15, sdxl

FAMILIES = (sd15, sdxl)
NEEDS = "EasyPhoto works with Stable Diffusion 1.5 and SDXL base models"
OTHERS = {  # model_index.json's _class_name of models that are neither
    "StableDiffusionXLImg2ImgPipeline": "an SDXL refiner (or img2img) model",
    "StableDiffusionXLInpaintPipeline": "an SDXL inpainting model",
    "StableDiffusionInpaintPipeline": "an inpainting model",
    "StableDiffusion3Pipeline": "a Stable Diffusion 3 model",
    "FluxPipeline": "a Flux model",
    "StableCascadeCombinedPipeline": "a Stable Cascade model",
    "PixArtAlphaPipeline": "a PixArt model",
    "StableDiffusionUpscalePipeline": "an upscaler",
    "KandinskyV22Pipeline": "a Kandinsky model",
}


def of_pipeline(pipe):
    return sdxl if getattr(pipe, "text_encoder_2", None) is not None else sd15


def of_index(index: dict, unet_config: dict | None, name: str):
    """The family of a diffusers model from its model_index.json and UNet config, or one line saying what it is."""
    cls = index.get("_class_name", "")
    channels = (unet_config or {}).get("in_channels", 4)
    if cls in ("StableDiffusionXLPipeline", "StableDiffusionPipeline"):
        if channels != 4:
            what = "an SDXL inpainting model" if cls == "StableDiffusionXLPipeline" else "an inpainting model"
            raise UserError(f"{name} is {what} (its UNet takes {channels} channels); {NEEDS}.")
        if cls == "StableDiffusionXLPipeline":
            return sdxl
        if (unet_config or {}).get("cross_attention_dim") == 1024:
            raise UserError(f"{name} is a Stable Diffusion 2.x model; {NEEDS}.")
        return sd15
    what = OTHERS.get(cls, f"a {cls} model" if cls else "not a diffusers pipeline")
    raise UserError(f"{name} is {what}; {NEEDS}.")


def of_folder(path: Path, name: str | None = None):
    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    unet = path / "unet" / "config.json"
    return of_index(index, json.loads(unet.read_text()) if unet.exists() else None, name or path.name)


def of_checkpoint_kind(kind: str):
    for family in FAMILIES:
        if kind in family.CHECKPOINT_KINDS:
            return family
    return None


def pipeline_class(family, task: str = "txt2img"):
    import diffusers

    return getattr(diffusers, family.PIPELINES[task])
