"""What a model file is, told before loading it, and A1111's hashes: on tiny files written here. Fast."""

import hashlib

import pytest
import torch
from safetensors.torch import save_file

from easyphoto_app.checkpoints import (
    checkpoint_family,
    checkpoint_kind,
    list_checkpoints,
    lora_hash,
    model_hash,
)
from easyphoto_app.errors import UserError


def tiny(path, keys: dict, metadata=None):
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path), metadata=metadata)
    return path


@pytest.mark.parametrize(
    "keys, kind",
    [
        ({"model.diffusion_model.out.0.weight": (4,)}, "v1"),
        ({}, "empty"),
        ({"lora_unet_a.lora_down.weight": (2, 4), "lora_unet_a.alpha": ()}, "lora"),
        ({"lycoris_unet_a.hada_w1_a": (2, 2)}, "lora"),
        ({"unet.a.lora_A.weight": (2, 2)}, "lora"),
        ({"lora_unet_a.hada_w1_a": (2, 2)}, "lora"),  # a LoHa in kohya's names: known by its prefix alone
        ({"lycoris_a.w": (2,), "text_encoder.a.alpha": ()}, "lora"),  # and an alpha by its suffix
        (
            {"lora_unet_a.lora_down.weight": (2, 4), "model.diffusion_model.out.0.weight": (4,)},
            "v1",
        ),  # LoRA keys inside
        ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}, "inpainting"),
        (
            {"model.diffusion_model.input_blocks.0.0.weight": (320,)},
            "unknown",
        ),  # a shape diffusers' sniffing cannot read
    ],
)
def test_a_files_kind_is_read_from_its_keys_and_shapes(tmp_path, keys, kind):
    assert checkpoint_kind(tiny(tmp_path / "m.safetensors", keys)) == kind


@pytest.mark.parametrize(
    "keys, says",
    [
        (
            {},
            "e.safetensors is an empty safetensors file (it holds no tensors); EasyPhoto works with Stable "
            "Diffusion 1.5 and SDXL",
        ),
        (
            {"lora_unet_a.lora_down.weight": (2, 4)},
            "e.safetensors is a LoRA, not a base model: put it in the data "
            "folder's loras/ and use it in a prompt as <lora:e:1>.",
        ),
        ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}, "is an SD1.5 inpainting checkpoint"),
        (
            {"model.diffusion_model.input_blocks.0.0.weight": (320,)},
            "is not a checkpoint EasyPhoto knows (diffusers reads it as 'unknown'); EasyPhoto works with",
        ),
    ],
)
def test_anything_but_an_sd15_or_sdxl_checkpoint_is_refused_in_one_line_naming_it(tmp_path, keys, says):
    with pytest.raises(UserError) as refused:
        checkpoint_family(tiny(tmp_path / "e.safetensors", keys))
    assert says in str(refused.value) and "\n" not in str(refused.value)


def test_an_sd15_checkpoint_is_sd15_and_a_truncated_one_is_named(tmp_path):
    path = tiny(tmp_path / "ok.safetensors", {"model.diffusion_model.out.0.weight": (4,)})
    assert checkpoint_family(path).NAME == "sd15"
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:20])
    with pytest.raises(UserError, match=r"^cut.safetensors is not a readable safetensors file \(SafetensorError: "):
        checkpoint_family(tmp_path / "cut.safetensors")


def test_a_folder_lists_its_safetensors_files_in_order(tmp_path):
    for name in ("b.safetensors", "a.safetensors", "c.ckpt", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "d.safetensors").mkdir()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["a.safetensors", "b.safetensors"]


def test_hashes_are_a1111s_model_hash_and_addnet_hash(tmp_path):
    path = tiny(tmp_path / "l.safetensors", {"w": (3, 3)}, metadata={"note": "first"})
    raw = path.read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    assert model_hash(path) == hashlib.sha256(raw).hexdigest()[:10]
    assert lora_hash(path) == hashlib.sha256(raw[header:]).hexdigest()[:12]
    renamed = tiny(tmp_path / "m.safetensors", {"w": (3, 3)}, metadata={"note": "a longer note than before"})
    assert lora_hash(renamed) == lora_hash(path) and model_hash(renamed) != model_hash(path)  # metadata edits
