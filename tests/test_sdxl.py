"""SDXL end to end on a tiny SDXL-architecture model (tests/tiny_model.py): prepare, face LoRA with both text
encoders, RL, generation with both LoRAs, a template portrait; the LoRA's keys; models of other families refused."""

import json
import re
import shutil

import photos
import pytest
import torch
from conftest import run_cli
from hub_server import HubServer
from PIL import Image
from test_model_files import parse_a1111

SIZE = ["--width", "64", "--height", "64"]


def _keys(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return set(f.keys()), f.metadata()


def test_both_loras_are_sdxl_loras_with_both_text_encoders(sdxl_home):
    face, meta = _keys(sdxl_home / "loras" / "astro.safetensors")
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    for prefix in ("lora_unet_", "lora_te1_text_model_encoder_layers_", "lora_te2_text_model_encoder_layers_"):
        assert any(k.startswith(prefix) for k in face), prefix
    rl, rl_meta = _keys(sdxl_home / "loras" / "ddpo_astro.safetensors")
    assert rl_meta["ss_base_model_version"] == "sdxl_base_v1-0" and all(k.startswith("lora_unet_") for k in rl)


# ComfyUI's names for a text encoder layer's LoRA-able parts (comfy/lora.py, LORA_CLIP_MAP)
COMFY_CLIP_PARTS = {
    "self_attn_q_proj",
    "self_attn_k_proj",
    "self_attn_v_proj",
    "self_attn_out_proj",
    "mlp_fc1",
    "mlp_fc2",
}


def a1111_target(name: str) -> str:
    """The module of an SGM-layout SDXL checkpoint that A1111 applies a LoRA module to, by its naming rules
    (extensions-builtin/Lora): a diffusers-style UNet name renumbered into the SGM blocks (three per level), te1 under
    conditioner embedder 0, te2 under embedder 1 with OpenCLIP's names (q, k and v are slices of its fused in_proj)."""
    if m := re.fullmatch(r"lora_unet_down_blocks_(\d+)_attentions_(\d+)_(.+)", name):
        return f"diffusion_model_input_blocks_{1 + 3 * int(m[1]) + int(m[2])}_1_{m[3]}"
    if m := re.fullmatch(r"lora_unet_up_blocks_(\d+)_attentions_(\d+)_(.+)", name):
        return f"diffusion_model_output_blocks_{3 * int(m[1]) + int(m[2])}_1_{m[3]}"
    if m := re.fullmatch(r"lora_unet_mid_block_attentions_0_(.+)", name):
        return f"diffusion_model_middle_block_1_{m[1]}"
    if m := re.fullmatch(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", name):
        part = m[2].replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj").replace("self_attn", "attn")
        return f"1_model_transformer_resblocks_{m[1]}_{re.sub(r'attn_[qkv]_proj$', 'attn', part)}"
    return name.replace("lora_te1_text_model_", "0_transformer_text_model_")


def test_every_sdxl_lora_module_names_a_layer_as_a1111_and_comfyui_read_them(sdxl_home, sdxl_dir):
    from ldm_checkpoint import ldm_state_dict

    from easyphoto_app.model_loading import load_pipeline, resolve_model

    pipe = load_pipeline(resolve_model(str(sdxl_dir), sdxl_home), "cpu", torch.float32)
    names, _ = _keys(sdxl_home / "loras" / "astro.safetensors")
    modules = {k.split(".")[0] for k in names}
    assert {m.split("_")[1] for m in modules} == {"unet", "te1", "te2"}
    sgm = set()  # A1111's module names: the checkpoint's, dots as underscores, without the model's own prefixes
    for key in ldm_state_dict(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        for prefix in ("model.", "conditioner.embedders."):
            if key.startswith(prefix):
                sgm.add(key[len(prefix) :].rsplit(".", 1)[0].replace(".", "_"))
    assert {m for m in modules if a1111_target(m) not in sgm} == set()
    diffusers_unet = {"lora_unet_" + n.replace(".", "_") for n, _ in pipe.unet.named_modules()}
    layers = {"1": pipe.text_encoder.config.num_hidden_layers, "2": pipe.text_encoder_2.config.num_hidden_layers}
    for m in modules:
        if m.startswith("lora_unet_"):
            assert m in diffusers_unet, m  # ComfyUI: lora_unet_ and a diffusers module name
        else:
            te = re.fullmatch(r"lora_te([12])_text_model_encoder_layers_(\d+)_(.+)", m)
            assert te and int(te[2]) < layers[te[1]] and te[3] in COMFY_CLIP_PARTS, m


def test_the_sdxl_lora_file_loads_in_diffusers_to_the_trained_adapter(sdxl_home, sdxl_dir):
    """Both text encoders' and the UNet's LoRA, read by diffusers from our file, give what the trained adapters gave in
    memory (a key diffusers does not read would be dropped with a warning, and the outputs would differ)."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import set_peft_model_state_dict

    from easyphoto_app.families import sdxl
    from easyphoto_app.lora_adapters import TE_TARGETS, UNET_TARGETS
    from easyphoto_app.lora_io import load_tensors
    from easyphoto_app.model_loading import load_pipeline, resolve_model

    def outputs(pipe):
        torch.manual_seed(0)
        with torch.no_grad():
            cond = sdxl.encode(pipe, ["easyphoto_face, easyphoto, 1person"], "cpu", 64)
            eps = pipe.unet(torch.randn(1, 4, 8, 8), torch.tensor(500), **cond.unet_kwargs()).sample
        return cond.hidden, cond.pooled, eps

    model = resolve_model(str(sdxl_dir), sdxl_home)
    from_file = load_pipeline(model, "cpu", torch.float32)
    before = outputs(from_file)
    from_file.load_lora_weights(str(sdxl_home / "loras" / "astro.safetensors"), adapter_name="astro")
    via_file = outputs(from_file)

    memory = load_pipeline(model, "cpu", torch.float32)
    state, _ = load_tensors(next((sdxl_home / "users" / "astro" / "lora").glob("checkpoint-*")) / "adapter.safetensors")
    for name, targets in (("text_encoder", TE_TARGETS), ("text_encoder_2", TE_TARGETS), ("unet", UNET_TARGETS)):
        part = getattr(memory, name)
        inject_adapter_in_model(LoraConfig(r=4, lora_alpha=2, target_modules=targets), part, adapter_name="face")
        set_peft_model_state_dict(
            part, {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}, adapter_name="face"
        )
    for got, want, base in zip(via_file, outputs(memory), before):
        assert (got - want).abs().max() < 1e-5
        assert (got - base).abs().max() > 1e-4  # the LoRA changed it: the comparison is not of two bare models


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sdxl_generates_with_both_loras_stacked_and_a1111s_fields(sdxl_home, precision):
    r = run_cli(
        sdxl_home,
        "--precision",
        precision,
        "generate",
        "--num",
        "1",
        "--num-inference-steps",
        "2",
        "--seed",
        "5",
        *SIZE,
        "--prompt",
        "easyphoto_face, studio <lora:astro:1> <lora:ddpo_astro:0.5>",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "No LoRA keys" not in r.stderr
    image = Image.open(json.loads(r.stdout.strip().splitlines()[-1])["paths"][0])
    fields = parse_a1111(image.text["parameters"])
    assert image.size == (64, 64) and fields["Model"] == "tiny-sdxl" and fields["Size"] == "64x64"
    assert set(dict(h.split(": ") for h in fields["Lora hashes"].split(", "))) == {"astro", "ddpo_astro"}
    assert len(set(image.getdata())) > 1


def test_a_template_portrait_on_sdxl_keeps_the_template_outside_the_face(sdxl_home, tmp_path):
    import numpy as np

    scene = photos.scene(tmp_path / "scene.jpg")
    r = run_cli(
        sdxl_home,
        "portrait",
        "--user",
        "astro",
        "--template",
        str(scene),
        "--num",
        "1",
        "--num-inference-steps",
        "4",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    x0, y0, side = out["box"]
    painted = np.asarray(Image.open(out["paths"][0]).convert("RGB")).astype(int)
    template = np.asarray(Image.open(scene).convert("RGB")).astype(int)
    outside = np.ones(template.shape[:2], bool)
    outside[y0 : y0 + side, x0 : x0 + side] = False
    assert np.abs(painted - template)[outside].max() <= 1
    assert np.abs(painted - template)[~outside].max() > 10


def test_the_sdxl_portrait_paints_with_sdxls_inpainting_pipeline_on_the_same_unet(sdxl_dir):
    from diffusers import StableDiffusionXLInpaintPipeline

    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import ResolvedModel, load_pipeline
    from easyphoto_app.portrait import inpaint_pipeline

    model = ResolvedModel("dir", "tiny", sdxl_dir)
    pipe = load_pipeline(model, "cpu", torch.float32)
    painter = inpaint_pipeline(LoadedModel(pipe, model))
    assert isinstance(painter, StableDiffusionXLInpaintPipeline) and painter.unet is pipe.unet
    assert painter.text_encoder_2 is pipe.text_encoder_2


def test_sdxl_training_defaults_are_sdxls_at_the_models_native_size_unless_given(sdxl_dir, tmp_path):
    """The native size is the UNet's sample size times the autoencoder's scale, as diffusers' pipelines default to it:
    64 px for the tiny model (8 x 8), 1024 px for SDXL base's configs, 1024 px too when the configs are not at hand."""
    from easyphoto_app.families import sdxl
    from easyphoto_app.model_defaults import model_defaults, panel_defaults
    from easyphoto_app.model_loading import ResolvedModel
    from easyphoto_app.settings import TrainConfig, load_settings

    model = ResolvedModel("dir", "tiny", sdxl_dir)
    cfg = model_defaults(TrainConfig(), model)
    assert (cfg.resolution, cfg.rank) == (64, 32)
    assert model_defaults(TrainConfig(resolution=512), model, {"resolution"}).resolution == 512
    assert model_defaults(TrainConfig(), ResolvedModel("dir", "sdxl base", sdxl.CONFIG)).resolution == 1024
    not_here = ResolvedModel("dir", "gone", tmp_path / "gone")
    not_here.__dict__["family"] = sdxl  # (its family, as a model whose configs are not readable would have)
    assert model_defaults(TrainConfig(), not_here).resolution == 1024
    settings = load_settings(tmp_path)
    settings.app.model = str(sdxl_dir)
    assert panel_defaults(settings).resolution == 64


def test_sdxl_samples_rl_and_generates_at_the_models_native_size_unless_a_size_is_set(sdxl_home):
    from easyphoto_app.ddpo.loop import RLRun
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.model_defaults import panel_defaults
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    settings = load_settings(sdxl_home)  # the tiny SDXL's native size is 64 px; the settings' default is 512
    assert (panel_defaults(settings, "generate").width, panel_defaults(settings, "generate").height) == (64, 64)
    run = RLRun(settings, Workspace(sdxl_home), "astro", Reporter(), reward_fn=lambda images, *a: [0.0] * len(images))
    assert (run.cfg.resolution, run.resolution) == (64, 64)
    settings.rl.resolution, settings.given = 512, {"rl.resolution"}
    assert RLRun(settings, Workspace(sdxl_home), "astro", Reporter(), reward_fn=lambda *a: []).resolution == 512
    r = run_cli(sdxl_home, "generate", "--num", "1", "--num-inference-steps", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert Image.open(json.loads(r.stdout.strip().splitlines()[-1])["paths"][0]).size == (64, 64)


def test_an_fp16_autoencoder_that_overflows_decodes_in_fp32_and_is_given_back_in_fp16():
    from diffusers import AutoencoderKL

    from easyphoto_app.precision import vae_in_safe_dtype

    for force_upcast, inside in ((True, torch.float32), (False, torch.float16)):
        vae = AutoencoderKL(
            block_out_channels=(8,), norm_num_groups=4, latent_channels=4, force_upcast=force_upcast
        ).half()
        with vae_in_safe_dtype(vae) as v:
            assert v.dtype == inside
        assert vae.dtype == torch.float16


def _diffusers_folder(folder, class_name, **unet):
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    if unet:
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text(json.dumps(unet))
    return folder


@pytest.mark.parametrize(
    "class_name, unet, says",
    [
        ("StableDiffusion3Pipeline", {}, "a Stable Diffusion 3 model"),
        ("FluxPipeline", {}, "a Flux model"),
        ("StableDiffusionXLImg2ImgPipeline", {"in_channels": 4}, "an SDXL refiner"),
        ("StableDiffusionXLPipeline", {"in_channels": 9}, "an SDXL inpainting model"),
        ("StableDiffusionPipeline", {"in_channels": 4, "cross_attention_dim": 1024}, "a Stable Diffusion 2.x model"),
        ("StableDiffusionPipeline", {"in_channels": 9, "cross_attention_dim": 768}, "an inpainting model"),
    ],
)
def test_a_diffusers_model_of_another_family_is_named_in_one_line(tmp_path, class_name, unet, says):
    from easyphoto_app.errors import UserError
    from easyphoto_app.model_loading import ResolvedModel

    model = ResolvedModel("dir", "other", _diffusers_folder(tmp_path / "other", class_name, **unet))
    with pytest.raises(UserError) as refused:
        model.family  # noqa: B018
    assert says in str(refused.value) and "SDXL base models" in str(refused.value) and "\n" not in str(refused.value)


def test_a_hub_repo_of_another_family_is_refused_before_its_weights_download(tmp_path, data_dir):
    repo = _diffusers_folder(tmp_path / "repo", "StableDiffusion3Pipeline")
    (repo / "transformer").mkdir()
    (repo / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 4096)
    with HubServer("tiny/sd3", repo) as hub:
        env = {
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_ENDPOINT": hub.url,
        }
        r = run_cli(data_dir, "--model", "tiny/sd3", "generate", "--num", "1", "--num-inference-steps", "1", env=env)
    assert r.returncode == 2 and "tiny/sd3 is a Stable Diffusion 3 model" in r.stderr and r.stderr.count("\n") == 1, (
        r.stderr
    )
    assert not any(name.endswith(".safetensors") for name in hub.downloads), hub.downloads


def test_an_sdxl_diffusers_folder_resolves_to_the_sdxl_family(sdxl_dir, tmp_path):
    from easyphoto_app.families import sdxl
    from easyphoto_app.model_loading import resolve_model

    copy = shutil.copytree(sdxl_dir, tmp_path / "my-sdxl")
    assert resolve_model(str(copy), tmp_path).family is sdxl


def test_an_sdxl_webui_single_file_loads_offline_to_its_own_weights(sdxl_dir, tmp_path, monkeypatch):
    """A WebUI-style SDXL file (Stability's key layout: two text encoders, the second OpenCLIP's) is read as SDXL and
    loads with no network through the app's own path to every weight it holds, configs and tokenizers from the
    family's folder: assets/sdxl for a real file (its shapes are checked below), the tiny model's own here."""
    import ldm_checkpoint
    from diffusers import StableDiffusionXLPipeline

    from easyphoto_app.families import sdxl
    from easyphoto_app.model_loading import load_pipeline, resolve_model

    original = StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    path = ldm_checkpoint.write_sdxl_checkpoint(tmp_path / "my_xl.safetensors", original)
    monkeypatch.setattr(sdxl, "CONFIG", sdxl_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = resolve_model(str(path), tmp_path)
    assert model.kind == "file" and model.family is sdxl
    pipe = load_pipeline(model, "cpu", torch.float32)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        loaded = getattr(pipe, name).state_dict()
        for key, value in getattr(original, name).state_dict().items():
            assert torch.equal(loaded[key], value), (name, key)
    assert pipe.tokenizer_2.pad_token == "!"


def test_assets_sdxl_builds_sdxl_base_at_its_published_size():
    """The configs that load a real SDXL file give SDXL base 1.0's own parameter counts, part by part."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from easyphoto_app.families import sdxl

    c = sdxl.CONFIG
    with torch.device("meta"):
        parts = {
            "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(c / "unet")),
            "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(c / "vae")),
            "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(c / "text_encoder")),
            "text_encoder_2": CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(c / "text_encoder_2")),
        }
    sizes = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    assert sizes == {
        "unet": 2_567_463_684,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
        "text_encoder_2": 694_659_840,
    }


def test_sdxl_trains_with_both_text_encoders_and_runs_rl_in_bf16(sdxl_home, tmp_path):
    """The GPU's half-precision path on the CPU: the face LoRA and the RL LoRA come out finite, the face LoRA's
    text-encoder parts trained."""
    from safetensors.torch import load_file

    home = tmp_path / "home"
    shutil.copytree(sdxl_home, home)
    for made in ("loras/astro.safetensors", "loras/ddpo_astro.safetensors"):
        (home / made).unlink()
    for work in ("users/astro/lora", "users/astro/ddpo_weights"):
        shutil.rmtree(home / work)
    for args in (
        [
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
            "--resolution",
            "64",
            "--train-text-encoder",
        ],
        [
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
            "--resolution",
            "64",
        ],
    ):
        r = run_cli(home, "--precision", "bf16", *args)
        assert r.returncode == 0, r.stderr
    face = load_file(str(home / "loras" / "astro.safetensors"))
    rl = load_file(str(home / "loras" / "ddpo_astro.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in [*face.values(), *rl.values()])
    up = [v for k, v in face.items() if k.startswith("lora_te2_") and k.endswith("lora_up.weight")]
    assert up and any(v.abs().max() > 0 for v in up)  # B starts at zero: non-zero means it trained


@pytest.mark.slow
def test_diffusers_own_tiny_sdxl_shapes_run_the_flow_at_their_native_size(tmp_path, astro_photos):
    """Someone else's tiny SDXL (diffusers' test shapes: a /2 autoencoder, equal text encoders): prepare, train with
    both text encoders, RL, generate with both LoRAs, all at its own 64 px with no size given."""
    from tiny_model import build_tiny_sdxl

    model = build_tiny_sdxl(tmp_path / "their-sdxl", diffusers_shapes=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "settings.toml").write_text(f"[app]\nmodel = {json.dumps(str(model))}\n")
    for args in (
        ["prepare", "--user", "xl", *map(str, astro_photos)],
        ["train", "--user", "xl", "--max-train-steps", "2", "--checkpointing-steps", "2", "--train-text-encoder"],
        [
            "rl",
            "--user",
            "xl",
            "--epochs",
            "1",
            "--samples-per-epoch",
            "2",
            "--sample-batch-size",
            "2",
            "--num-inference-steps",
            "2",
        ],
    ):
        r = run_cli(home, *args)
        assert r.returncode == 0, r.stderr
    r = run_cli(home, "generate", "--user", "xl", "--num", "1", "--num-inference-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    image = Image.open(json.loads(r.stdout.strip().splitlines()[-1])["paths"][0])
    assert image.size == (64, 64)
    assert set(dict(h.split(": ") for h in parse_a1111(image.text["parameters"])["Lora hashes"].split(", "))) == {
        "xl",
        "ddpo_xl",
    }
    names, _ = _keys(home / "loras" / "xl.safetensors")
    assert {k.split("_")[1] for k in names} == {"unet", "te1", "te2"}
