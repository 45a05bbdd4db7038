"""Real model files: SD1.5 single files offline, the real CLIP tokenizer, WebUI LoRA keys, A1111-exact PNG info."""

import hashlib
import json
import re

import pytest
import torch
from conftest import run_cli


def test_tokenizer_is_sd15s_clip_tokenizer_id_for_id(demo_model_dir):
    from transformers import CLIPTokenizer

    from easyphoto_app.checkpoints import SD15_CONFIG

    for folder in (SD15_CONFIG / "tokenizer", demo_model_dir / "tokenizer"):
        t = CLIPTokenizer.from_pretrained(folder)
        assert len(t) == 49408 and t.pad_token == "<|endoftext|>" and t.model_max_length == 77
        ids = t("a photo of an astronaut, easyphoto_face").input_ids  # open_clip's own tokenizer gives these
        assert ids == [49406, 320, 1125, 539, 550, 18376, 267, 18308, 1125, 318, 1710, 49407]


def _sd15_module_names():
    """The LoRA module names a WebUI resolves for SD1.5, from the shipped configs: the UNet's as diffusers names
    them (A1111 and ComfyUI map those to the LDM layout), and CLIP's under `text_model`."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from easyphoto_app.checkpoints import SD15_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SD15_CONFIG / "unet"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_CONFIG / "text_encoder"))
    kinds = (torch.nn.Linear, torch.nn.Conv2d)
    names = {"lora_unet_" + n.replace(".", "_") for n, m in unet.named_modules() if isinstance(m, kinds)}
    names |= {"lora_te_text_model_" + n.replace(".", "_") for n, m in text.named_modules() if isinstance(m, kinds)}
    return names


@pytest.fixture(scope="module")
def te_home(session_data, trained_home):
    """A user trained with --train-text-encoder, then one RL epoch on top."""
    import shutil

    def build(folder):
        home = folder / "data"
        shutil.copytree(trained_home, home)
        r = run_cli(
            home,
            "train",
            "--user",
            "astro",
            "--max-train-steps",
            "2",
            "--checkpointing-steps",
            "2",
            "--rank",
            "4",
            "--lora-alpha",
            "2",
            "--learning-rate",
            "1e-2",
            "--train-text-encoder",
        )
        assert r.returncode == 0, r.stderr
        r = run_cli(
            home,
            "rl",
            "--user",
            "astro",
            "--epochs",
            "1",
            "--samples-per-epoch",
            "2",
            "--sample-batch-size",
            "2",
            "--num-inference-steps",
            "3",
        )
        assert r.returncode == 0, r.stderr
        return home

    return session_data("te", build)


def test_every_lora_key_names_a_real_sd15_module(te_home):
    from safetensors import safe_open

    known = _sd15_module_names()
    for name in ("astro", "ddpo_astro"):
        with safe_open(str(te_home / "loras" / f"{name}.safetensors"), "pt") as f:
            modules = {k.split(".")[0] for k in f.keys()}
        assert modules and modules <= known, sorted(modules - known)[:5]
        if name == "astro":
            assert any(m.startswith("lora_te_text_model_encoder_layers_") for m in modules)


def test_text_encoder_lora_loads_in_diffusers_to_the_trained_outputs(te_home):
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import set_peft_model_state_dict

    from easyphoto_app.lora_adapters import TE_TARGETS
    from easyphoto_app.lora_io import load_tensors
    from easyphoto_app.model_loading import load_pipeline, resolve_model

    def embeddings(pipe):
        ids = pipe.tokenizer(
            "easyphoto_face, easyphoto, 1person", padding="max_length", max_length=77, return_tensors="pt"
        ).input_ids
        with torch.no_grad():
            return pipe.text_encoder(ids)[0]

    base = load_pipeline(resolve_model("demo", te_home), "cpu")
    before = embeddings(base)
    base.load_lora_weights(str(te_home / "loras" / "astro.safetensors"), adapter_name="astro")
    via_file = embeddings(base)

    memory = load_pipeline(resolve_model("demo", te_home), "cpu")
    state, _ = load_tensors(next((te_home / "users" / "astro" / "lora").glob("checkpoint-*")) / "adapter.safetensors")
    inject_adapter_in_model(
        LoraConfig(r=4, lora_alpha=2, target_modules=TE_TARGETS), memory.text_encoder, adapter_name="face"
    )
    set_peft_model_state_dict(
        memory.text_encoder, {k[13:]: v for k, v in state.items() if k.startswith("text_encoder.")}, adapter_name="face"
    )
    in_memory = embeddings(memory)
    assert (via_file - in_memory).abs().max() < 1e-5
    assert (via_file - before).abs().max() > 1e-2


def parse_a1111(text: str) -> dict:
    """PNG info as A1111's infotext parser reads it: prompt, negative prompt, then `key: value` pairs, where a
    value may be a quoted string holding commas."""
    lines = text.strip().split("\n")
    fields = dict(re.findall(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)', lines[-1]))
    fields = {k.strip(): v.strip().strip('"') for k, v in fields.items()}
    fields["Prompt"] = lines[0]
    fields["Negative prompt"] = lines[1].removeprefix("Negative prompt: ")
    return fields


def test_png_info_lora_hashes_are_a1111s_and_the_lora_carries_its_hash(te_home):
    from PIL import Image
    from safetensors import safe_open

    def addnet_hash(path):
        raw = path.read_bytes()
        return hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little") :]).hexdigest()

    r = run_cli(
        te_home, "generate", "--user", "astro", "--num", "1", "--num-inference-steps", "2", "--seed", "3", "--json"
    )
    assert r.returncode == 0, r.stderr
    assert "Loading" not in r.stderr and "No LoRA keys" not in r.stderr  # a quiet console: only what a user must see
    fields = parse_a1111(Image.open(json.loads(r.stdout)["paths"][0]).text["parameters"])
    hashes = dict(item.split(": ") for item in fields["Lora hashes"].split(", "))
    for name in ("astro", "ddpo_astro"):
        path = te_home / "loras" / f"{name}.safetensors"
        with safe_open(str(path), "pt") as f:
            assert f.metadata()["sshs_model_hash"] == addnet_hash(path)
        assert hashes[name] == addnet_hash(path)[:12]
    assert fields["Sampler"] == "DPM++ 2M" and fields["Schedule type"] == "Karras" and fields["RNG"] == "CPU"
    assert fields["Seed"] == "3" and fields["Steps"] == "2" and fields["Model"] == "EasyPhoto demo model"
    assert "<lora:astro:1> <lora:ddpo_astro:1>" in fields["Prompt"] and fields["Negative prompt"]


def _tiny_checkpoint(path, keys: dict):
    from safetensors.torch import save_file

    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    return path


REFINER_KEYS = {"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": (4,)}


@pytest.mark.parametrize(
    "keys, says",
    [
        (REFINER_KEYS, "an SDXL refiner"),
        ({"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)}, "SD1.5 inpainting checkpoint"),
        (
            {"model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)},
            "Stable Diffusion 2.x",
        ),
        ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, "is a LoRA, not a base model"),
    ],
)
def test_a_file_that_is_not_an_sd15_or_sdxl_checkpoint_is_named_for_what_it_is(tmp_path, keys, says):
    from easyphoto_app.checkpoints import checkpoint_family
    from easyphoto_app.errors import UserError

    with pytest.raises(UserError, match=says):
        checkpoint_family(_tiny_checkpoint(tmp_path / "other.safetensors", keys))


@pytest.mark.slow
def test_generating_with_an_sdxl_refiner_file_is_one_line_that_says_so(tmp_path, data_dir):
    path = _tiny_checkpoint(tmp_path / "other.safetensors", REFINER_KEYS)
    r = run_cli(data_dir, "--model", str(path), "generate", "--num", "1", "--num-inference-steps", "1")
    assert r.returncode == 2 and "an SDXL refiner" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_folder_of_checkpoints_lists_them_or_uses_its_only_one(tmp_path):
    from easyphoto_app.errors import UserError
    from easyphoto_app.model_loading import resolve_model

    folder = tmp_path / "Stable-diffusion"
    folder.mkdir()
    one = _tiny_checkpoint(folder / "a.safetensors", {"x": (1,)})
    assert resolve_model(str(folder), tmp_path).path == one.resolve()
    _tiny_checkpoint(folder / "b.safetensors", {"x": (1,)})
    with pytest.raises(UserError, match="holds 2 checkpoints; choose one: a.safetensors, b.safetensors"):
        resolve_model(str(folder), tmp_path)


@pytest.mark.slow
def test_sd15_single_file_in_fp16_generates_offline_with_a1111s_model_hash(tmp_path, data_dir):
    """A WebUI-style checkpoint (original key layout, fp16, random weights) loads with no network through the
    app's own path (assets/sd15 configs), to the same weights, and PNG info names its A1111 hash."""
    import ldm_checkpoint
    from PIL import Image

    from easyphoto_app.checkpoints import SD15_CONFIG

    path, _ = ldm_checkpoint.write_sd15_checkpoint(tmp_path / "my_model.safetensors", SD15_CONFIG)
    r = run_cli(
        data_dir,
        "--model",
        str(path),
        "generate",
        "--num",
        "1",
        "--num-inference-steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--json",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)["paths"][0]
    fields = parse_a1111(Image.open(out).text["parameters"])
    assert fields["Model hash"] == hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    assert fields["Model"] == "my_model" and Image.open(out).size == (64, 64)
