"""Structure control without the network: the canny edges, the cache lookup and the download decision. Fast.
(The download itself and the painting with it: test_portrait.py, against a local hub.)"""

import numpy as np
import pytest
from conftest import cache_repo

from easyphoto_app import controlnet, hub
from easyphoto_app.errors import UserError


def square(contrast: int) -> np.ndarray:
    rgb = np.full((64, 64, 3), 100, np.uint8)
    rgb[16:48, 16:48] = 100 + contrast
    return rgb


def test_edges_are_white_outlines_on_black_in_three_equal_channels():
    edges = controlnet.canny_edges(square(120))
    assert edges.shape == (64, 64, 3) and edges.dtype == np.uint8
    assert (edges[..., 0] == edges[..., 1]).all() and (edges[..., 1] == edges[..., 2]).all()
    assert set(np.unique(edges)) == {0, 255}
    on = np.argwhere(edges[..., 0] == 255)
    assert on.min() >= 15 and on.max() <= 48  # on the square's border, nothing elsewhere
    assert edges[30, 30, 0] == 0 and edges[5, 5, 0] == 0


def test_edges_of_a_photo_are_opencvs_canny_of_its_grey_at_100_200():
    """On the astronaut photo, where red and blue differ: the grey is taken as RGB, the thresholds are the ones
    the canny ControlNet was trained with."""
    import cv2
    import photos

    rgb = photos.astronaut()
    edges = controlnet.canny_edges(rgb)
    assert (edges[..., 0] == cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 100, 200)).all()
    mine = controlnet.canny_edges(rgb, 50, 120)[..., 0]
    assert (mine == cv2.Canny(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 50, 120)).all() and mine.sum() > edges[
        ..., 0
    ].sum()


def test_faint_outlines_need_lower_thresholds():
    assert not controlnet.canny_edges(square(30)).any()  # below the default 100/200
    assert controlnet.canny_edges(square(30), low=10, high=20).any()


def test_a_cached_controlnet_is_one_with_config_and_safetensors_weights(hub_cache):
    assert controlnet.cached_controlnet() is None
    snap = cache_repo(hub_cache, controlnet.CANNY_REPO, ["config.json"])
    assert controlnet.cached_controlnet() is None  # a download stopped before the weights
    (snap / "diffusion_pytorch_model.fp16.safetensors").write_text("w")
    assert controlnet.cached_controlnet() == snap


def test_a_cached_controlnet_is_used_without_asking_the_hub(hub_cache, monkeypatch):
    snap = cache_repo(hub_cache, "me/net", ["config.json", "diffusion_pytorch_model.safetensors"])

    def no_network(*a, **k):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(hub, "hub_unreachable", no_network)
    monkeypatch.setattr(hub, "download_hub_model", no_network)
    assert controlnet.ensure_controlnet("cpu", "me/net") == snap


def test_offline_and_not_cached_is_one_refusal_saying_how_to_get_it(hub_cache, monkeypatch):
    monkeypatch.setattr(hub, "hub_unreachable", lambda repo: repo == "me/net" and "HF_HUB_OFFLINE is set")
    with pytest.raises(
        UserError,
        match=r"Structure control needs me/net, which is not downloaded yet, and the "
        r"Hugging Face Hub cannot be reached \(HF_HUB_OFFLINE is set\)\. Connect once",
    ):
        controlnet.ensure_controlnet("cuda", "me/net")


@pytest.mark.parametrize("device, fp16", [("cuda", True), ("cpu", False), ("mps", False)])
def test_the_download_asks_for_fp16_weights_only_for_an_nvidia_gpu(hub_cache, monkeypatch, device, fp16):
    asked = []

    def download(repo_id, want_fp16, index, what):
        asked.append((repo_id, want_fp16, index, what))
        return hub_cache / "got", 1

    monkeypatch.setattr(hub, "hub_unreachable", lambda repo: None if repo == "me/net" else "asked about another repo")
    monkeypatch.setattr(hub, "download_hub_model", download)
    assert controlnet.ensure_controlnet(device, "me/net") == hub_cache / "got"
    assert asked == [("me/net", fp16, "config.json", "a ControlNet repository")]


@pytest.mark.parametrize("variant, dtype", [(None, "float32"), ("fp16", "bfloat16")])
def test_the_control_pipeline_shares_the_loaded_parts_and_is_made_once_per_controlnet(
    demo_model_dir, tmp_path, variant, dtype
):
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetInpaintPipeline

    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import ResolvedModel, load_pipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"  # on a GPU machine the ControlNet must land there too
    demo = ResolvedModel("demo", "demo", demo_model_dir)
    loaded = LoadedModel(load_pipeline(demo, device, getattr(torch, dtype)), demo)
    demo_pipe = loaded.pipe
    folders = [tmp_path / "a", tmp_path / "b"]
    for n, folder in enumerate(folders):
        net = ControlNetModel.from_unet(demo_pipe.unet)  # the UNet's encoder weights: told apart by this shift
        with torch.no_grad():
            net.conv_in.bias += n
        net.save_pretrained(folder, variant=variant)  # fp16: that file alone
        assert [f.name for f in folder.glob("*.safetensors")] == [
            f"diffusion_pytorch_model{'.fp16' if variant else ''}.safetensors"
        ]
    painter = controlnet.control_pipeline(loaded, folders[0])
    assert isinstance(painter, StableDiffusionControlNetInpaintPipeline)
    assert painter.unet is demo_pipe.unet and painter.vae is demo_pipe.vae  # no second copy of the model
    assert painter.controlnet.dtype == demo_pipe.unet.dtype and painter.controlnet.device == demo_pipe.device
    saved = ControlNetModel.from_pretrained(folders[0], variant=variant).state_dict()
    assert all(
        torch.allclose(v.float().cpu(), saved[k].float(), rtol=1e-2, atol=1e-3)  # (bfloat16 rounds)
        for k, v in painter.controlnet.state_dict().items()
    )
    assert controlnet.control_pipeline(loaded, folders[0]) is painter
    other = controlnet.control_pipeline(loaded, folders[1])
    assert other is not painter and torch.equal(other.controlnet.conv_in.bias, painter.controlnet.conv_in.bias + 1)


def test_a_controlnet_folder_with_pickled_weights_only_is_refused(demo_model_dir, tmp_path):
    import torch
    from diffusers import ControlNetModel

    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import ResolvedModel, load_pipeline

    demo = ResolvedModel("demo", "demo", demo_model_dir)
    pipe = load_pipeline(demo, "cpu", torch.float32)
    ControlNetModel.from_unet(pipe.unet).save_pretrained(tmp_path, variant="fp16", safe_serialization=False)
    assert [f.name for f in tmp_path.iterdir() if f.suffix == ".bin"] == ["diffusion_pytorch_model.fp16.bin"]
    with pytest.raises(OSError, match="safetensors"):
        controlnet.control_pipeline(LoadedModel(pipe, demo), tmp_path)  # pickle can run code: never loaded
