"""Which model a spec names and which Hub files a download takes: fast, no network (downloads themselves:
test_download.py, against a local Hub)."""

import pytest

from easyphoto_app import models

SD15_REPO = [
    "model_index.json", "README.md", "v1-5-pruned.safetensors", "v1-5-pruned.ckpt",
    "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt",
    "text_encoder/config.json", "text_encoder/model.safetensors", "text_encoder/model.fp16.safetensors",
    "text_encoder/pytorch_model.bin",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors",  # this folder has the fp16 variant only
    "safety_checker/config.json", "safety_checker/model.safetensors", "feature_extractor/preprocessor_config.json",
]
CONFIGS = ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "tokenizer/merges.txt",
           "tokenizer/vocab.json", "unet/config.json", "vae/config.json"]


def test_a_download_takes_the_configs_and_one_weights_file_per_part():
    pipeline = [f for f in SD15_REPO if "/" in f or f == "model_index.json"]  # as download_hub_model passes them
    assert models._pick_hub_files(pipeline, want_fp16=False) == sorted(CONFIGS + [
        "text_encoder/model.safetensors", "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors"])
    assert models._pick_hub_files(pipeline, want_fp16=True) == sorted(CONFIGS + [
        "text_encoder/model.fp16.safetensors", "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors"])


def test_a_one_model_repo_takes_its_top_level_weights():
    controlnet = ["config.json", "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                  "diffusion_pytorch_model.bin", "images/example.png"]
    assert models._pick_hub_files(controlnet, want_fp16=False) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert models._pick_hub_files(controlnet, want_fp16=True) == ["config.json",
                                                                  "diffusion_pytorch_model.fp16.safetensors"]
    ema_only = ["config.json", "unet/diffusion_pytorch_model.ema.safetensors"]
    assert models._pick_hub_files(ema_only, want_fp16=False) == ["config.json"]  # never EMA weights by mistake
    plain_only = ["config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert models._pick_hub_files(plain_only, want_fp16=True) == plain_only  # no fp16 variant: the one there is


@pytest.mark.parametrize("spec, path", [("./sd15.safetensors", True), ("/models/sd", True), ("~/sd", True),
                                        ("C:\\models\\sd", True), ("D:", True), ("models\\sd", True),
                                        ("a/b/c", True), ("runwayml/stable-diffusion-v1-5", False),
                                        ("demo", False), ("x", False)])
def test_a_spec_that_looks_like_a_path_is_never_sent_to_the_hub(spec, path):
    assert models._looks_like_path(spec) is path


@pytest.mark.parametrize("n, text", [(0, "0.0 MB"), (5 * 2**20, "5.0 MB"), (2**30 - 2**19, "1023.5 MB"),
                                     (2**30, "1.00 GB"), (int(4.27 * 2**30), "4.27 GB")])
def test_human_sizes(n, text):
    assert models.human_size(n) == text


def test_a_missing_path_is_one_clear_line_and_a_pickle_is_refused(tmp_path):
    with pytest.raises(models.UserError, match="^Model path ./nowhere does not exist.$"):
        models.resolve_model("./nowhere", tmp_path)
    with pytest.raises(models.UserError, match="pickled checkpoint, which can run arbitrary code"):
        models.resolve_model(str(tmp_path / "sd15.CKPT"), tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(models.UserError, match="neither a diffusers model folder"):
        models.resolve_model(str(tmp_path / "notes.txt"), tmp_path)
