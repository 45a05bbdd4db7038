"""WebUI single-file checkpoints: what a file is, how it loads offline, and its A1111 hash.

A `.safetensors` checkpoint in the original (LDM) layout is loaded with diffusers' `from_single_file`
and its family's configs and tokenizers shipped in assets/ (sd15, sdxl), so nothing is fetched from the Hub.
Anything that is not an SD 1.5 or SDXL base model (SD2.x, a refiner, an inpainting UNet, a LoRA) is named and
refused before loading.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from easyphoto_app.errors import UserError
from easyphoto_app.families import NEEDS, of_checkpoint_kind, pipeline_class
from easyphoto_app.families.sd15 import CONFIG as SD15_CONFIG  # noqa: F401 - the demo and the tests use it
from easyphoto_app.workspace import sha256_file

WHAT_IT_IS = {
    "v2": "a Stable Diffusion 2.x checkpoint",
    "inpainting": "an SD1.5 inpainting checkpoint (its UNet takes 9 channels)",
    "inpainting_v2": "an SD2 inpainting checkpoint",
    "xl_refiner": "an SDXL refiner",
    "xl_inpaint": "an SDXL inpainting checkpoint",
    "playground-v2-5": "a Playground v2.5 (SDXL-type) checkpoint",
    "controlnet": "a ControlNet",
    "upscale": "an upscaler model",
    "empty": "an empty safetensors file (it holds no tensors)",
}


def checkpoint_kind(path: Path) -> str:
    """diffusers' name for the model type ('v1' = SD1.x), 'lora' for a LoRA, 'empty', or 'unknown'."""
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:  # shapes only: diffusers' type sniffing reads nothing else
            shapes = {k: SimpleNamespace(shape=tuple(fh.get_slice(k).get_shape())) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file
        raise UserError(
            f"{Path(path).name} is not a readable safetensors file ({type(exc).__name__}: {exc})."
        ) from None
    if not shapes:
        return "empty"
    if all(k.startswith(("lora_", "lycoris_")) or ".lora_" in k or ".alpha" in k for k in shapes):
        return "lora"
    try:
        return infer_diffusers_model_type(shapes)
    except Exception:  # noqa: BLE001 - keys none of diffusers' types has
        return "unknown"


def checkpoint_family(path: Path):
    """The family module of an SD 1.5 or SDXL base checkpoint; one clear line for any other file."""
    name = Path(path).name
    kind = checkpoint_kind(path)
    family = of_checkpoint_kind(kind)
    if family is not None:
        return family
    if kind == "lora":
        raise UserError(
            f"{name} is a LoRA, not a base model: put it in the data folder's loras/ and use it in a prompt as "
            f"<lora:{Path(path).stem}:1>."
        )
    what = WHAT_IT_IS.get(kind, f"not a checkpoint EasyPhoto knows (diffusers reads it as '{kind}')")
    raise UserError(f"{name} is {what}; {NEEDS}.")


def load_single_file(path: Path, **kwargs):
    """A pipeline from a single file, offline: its family's configs and tokenizers from assets/."""
    family = checkpoint_family(path)
    return pipeline_class(family).from_single_file(
        str(path), config=str(family.CONFIG), local_files_only=True, **kwargs
    )


def list_checkpoints(folder: Path) -> list[Path]:
    """The .safetensors files of a folder such as a WebUI's models/Stable-diffusion."""
    return sorted(p for p in Path(folder).glob("*.safetensors") if p.is_file())


def model_hash(path: Path) -> str:
    """A1111's "Model hash": sha256 of the whole file, first 10 hex digits."""
    return sha256_file(path)[:10]


def safetensors_data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        return 8 + int.from_bytes(fh.read(8), "little")


def lora_hash(path: Path) -> str:
    """A1111's "Lora hashes" entry (its addnet hash): sha256 of the bytes after the safetensors header, so that
    metadata edits do not change it; first 12 hex digits."""
    return sha256_file(path, safetensors_data_offset(path))[:12]
