"""The identity adapter (IP-Adapter plus-face) on the tiny models: a tiny adapter in the real files' layout, loaded by
diffusers' own load_ip_adapter from a Hugging Face cache (or a local hub), conditioning SD 1.5 and SDXL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from tiny_ip_adapter import build_tiny_ip_adapter

from easyphoto_app import families
from easyphoto_app import identity_adapter as ia
from easyphoto_app.errors import UserError
from easyphoto_app.loaded_model import LoadedModel

REPO_SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def adapter_repo(tmp_path_factory, demo_model_dir, sdxl_dir) -> Path:
    """h94/IP-Adapter's layout with tiny adapters for the tests' SD 1.5 and SDXL models."""
    repo = tmp_path_factory.mktemp("ip-adapter") / "repo"
    build_tiny_ip_adapter(repo, "sd15", demo_model_dir)
    return build_tiny_ip_adapter(repo, "sdxl", sdxl_dir)


def install_in_cache(cache: Path, repo: Path) -> Path:
    """repo as a finished download of h94/IP-Adapter leaves it in a Hugging Face cache; returns the snapshot."""
    base = cache / f"models--{ia.REPO.replace('/', '--')}"
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(REPO_SHA)
    shutil.copytree(repo, base / "snapshots" / REPO_SHA)
    return base / "snapshots" / REPO_SHA


@pytest.fixture
def cached(hub_cache, adapter_repo) -> Path:
    return install_in_cache(hub_cache, adapter_repo)


def faces(*names) -> list:
    """Real faces: the astronaut's, and Tom Hanks' from insightface's sample images."""
    import photos
    from PIL import Image

    def face(name):
        if name == "hanks":
            return Image.open(photos.insightface_image("Tom_Hanks_54745.png")).convert("RGB")
        return Image.fromarray(photos.astronaut()[0:220, 140:340])

    return [face(name) for name in names]


def load(model_dir: Path) -> LoadedModel:
    import torch

    from easyphoto_app.model_loading import ResolvedModel, load_pipeline

    model = ResolvedModel("dir", "tiny", model_dir)
    return LoadedModel(load_pipeline(model, "cpu", torch.float32), model)


@pytest.fixture(scope="module")
def pipes(demo_model_dir, sdxl_dir) -> dict:
    return {"sd15": load(demo_model_dir), "sdxl": load(sdxl_dir)}


def draw(pipe, identity=None) -> np.ndarray:
    import torch

    size = 64
    kwargs = identity.call_kwargs(pipe) if identity else {}
    out = pipe(
        prompt="a portrait",
        num_inference_steps=2,
        guidance_scale=5.0,
        width=size,
        height=size,
        generator=torch.Generator("cpu").manual_seed(3),
        output_type="np",
        **kwargs,
    )
    return out.images[0]


def identity_of(loaded: LoadedModel, folder: Path, family, people: list, scale: float) -> ia.Identity:
    files = ia.adapter_files(family)
    loaded.use_ip_adapter(folder, files)
    return ia.Identity(ia.encode_faces(loaded.pipe, faces(*people), True), scale, files, loaded.ip_adapter)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_the_picture_follows_the_reference_face_and_scale_0_is_the_bare_model(pipes, adapter_repo, family):
    loaded = pipes[family]
    pipe = loaded.pipe
    bare = draw(pipe)
    astronaut = identity_of(loaded, adapter_repo, getattr(families, family), ["astronaut"], 0.8)
    with_astronaut = draw(pipe, astronaut)
    with_hanks = draw(pipe, identity_of(loaded, adapter_repo, getattr(families, family), ["hanks"], 0.8))
    assert np.abs(with_astronaut - with_hanks).mean() > 0.01  # another face, another picture
    assert np.abs(with_astronaut - bare).mean() > 0.01
    astronaut.scale = 0.0  # loaded and handed a face, at scale 0: the bare model's picture exactly
    assert np.array_equal(draw(pipe, astronaut), bare)
    loaded.use_ip_adapter(None)
    assert np.array_equal(draw(pipe), bare) and loaded.ip_adapter is None


def test_a_derived_pipeline_is_kept_and_handed_the_new_image_encoder(pipes, adapter_repo):
    from easyphoto_app.portrait import inpaint_pipeline

    loaded = pipes["sd15"]
    loaded.use_ip_adapter(None)
    painter = inpaint_pipeline(loaded)
    loaded.use_ip_adapter(adapter_repo, ia.adapter_files(families.sd15))
    assert inpaint_pipeline(loaded) is painter and loaded.pipe.image_encoder is not None
    assert painter.image_encoder is loaded.pipe.image_encoder and painter.unet is loaded.pipe.unet
    loaded.use_ip_adapter(None)
    assert inpaint_pipeline(loaded) is painter and painter.image_encoder is None  # the old encoder is let go


def test_only_the_far_left_of_the_slider_is_automatic_and_just_under_0_is_off():
    assert ia.resolve_scale(-1, has_lora=False) == ia.INSTANT_SCALE and ia.resolve_scale(-1, has_lora=True) == 0
    assert ia.resolve_scale(-0.05, has_lora=False) == 0 and ia.resolve_scale(-0.95, has_lora=False) == 0
    assert ia.resolve_scale(0.4, has_lora=True) == 0.4 and ia.resolve_scale(0, has_lora=False) == 0


def test_other_families_are_refused_in_one_line_before_any_download():
    class StableDiffusion2:
        NAME, LABEL = "sd2", "Stable Diffusion 2.x"

    with pytest.raises(UserError, match=r"^Identity strength \(IP-Adapter plus-face\) exists for SD 1.5 and SDXL, "):
        ia.adapter_files(StableDiffusion2)


def test_the_cached_adapter_is_found_only_when_all_its_files_are_there(hub_cache, adapter_repo):
    assert ia.cached_adapter(families.sd15) is None
    snapshot = install_in_cache(hub_cache, adapter_repo)
    assert ia.cached_adapter(families.sd15) == snapshot
    (snapshot / "models" / "image_encoder" / "model.safetensors").unlink()
    assert ia.cached_adapter(families.sd15) is None


@pytest.fixture
def instant_home(home_copy) -> Path:
    """'astro' with checked photos and no LoRA at all."""
    shutil.rmtree(home_copy / "loras")
    return home_copy


def swap_faces(home: Path, user: str) -> None:
    """Another person's face in place of each of user's accepted crops."""
    hanks = faces("hanks")[0]
    for crop in (home / "users" / user / "faces").glob("*.jpg"):
        hanks.resize((256, 256)).save(crop)


def generate_one(loaded, home: Path, **cfg):
    from easyphoto_app.generate import generate
    from easyphoto_app.settings import GenerateConfig
    from easyphoto_app.workspace import Workspace

    gen = GenerateConfig(num=1, seed=5, num_inference_steps=2, width=64, height=64, **cfg)
    result = generate(loaded, Workspace(home), gen, user="astro", use_rl=False)
    from PIL import Image

    return result, np.asarray(Image.open(result.paths[0])), result.parameters[0]


def test_instant_mode_draws_from_the_checked_photos_with_no_lora(pipes, cached, instant_home):
    loaded = pipes["sd15"]
    result, image, params = generate_one(loaded, instant_home)
    assert result.mode == "instant mode (no LoRA; identity adapter at 0.6)"
    digest = ia.adapter_hash(cached / "models" / "ip-adapter-plus-face_sd15.safetensors")
    assert (
        f'ControlNet 0: "Module: ip-adapter_clip_sd15, Model: ip-adapter-plus-face_sd15 [{digest}], Weight: 0.6"'
        in params
    )
    assert "Model hash: " in params and "Lora hashes" not in params
    swap_faces(instant_home, "astro")
    _, other, _ = generate_one(loaded, instant_home)
    assert np.abs(image.astype(int) - other).mean() > 2  # the photos drive the face


def test_with_the_loras_the_adapter_is_off_by_default_and_the_photos_change_nothing(pipes, cached, home_copy):
    loaded = pipes["sd15"]
    result, before, params = generate_one(loaded, home_copy)
    assert result.mode == "LoRA" and "ControlNet" not in params and "Lora hashes" in params
    swap_faces(home_copy, "astro")
    assert np.array_equal(generate_one(loaded, home_copy)[1], before)
    result, stacked, params = generate_one(loaded, home_copy, ip_scale=0.4)
    assert result.mode == "LoRA + identity adapter at 0.4" and "Weight: 0.4" in params and "Lora hashes" in params
    assert not np.array_equal(stacked, before)


def test_offline_and_not_downloaded_it_is_one_line_and_the_rest_works(home_copy, hub_cache, demo_model_dir):
    args = ["--model", str(demo_model_dir), "generate", "--user", "astro", "--num-inference-steps", "2", "--num", "1"]
    r = run_cli(home_copy, *args, "--ip-scale", "0.5", env={"HF_HOME": str(hub_cache)})
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert errors == [
        "error: Identity strength needs the IP-Adapter ip-adapter-plus-face_sd15 (h94/IP-Adapter, Apache-2.0, a "
        "one-off download of 2.6 GB), which is not downloaded yet, and the Hugging Face Hub cannot be reached "
        "(HF_HUB_OFFLINE is set). Connect once to download it, or set identity strength to 0."
    ]
    r = run_cli(home_copy, *args, "--json", env={"HF_HOME": str(hub_cache)})
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["mode"] == "LoRA", r.stderr


def test_the_adapter_downloads_once_then_works_offline(tmp_path, adapter_repo, instant_home, demo_model_dir):
    from hub_server import HubServer

    shutil.copy(adapter_repo / "models" / "image_encoder" / "config.json", adapter_repo / "unrelated.json")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    args = [
        "--model",
        str(demo_model_dir),
        "generate",
        "--user",
        "astro",
        "--num-inference-steps",
        "2",
        "--num",
        "1",
        "--json",
    ]
    with HubServer(ia.REPO, adapter_repo) as hub:
        env["HF_ENDPOINT"] = hub.url
        r = run_cli(instant_home, *args, env=env)
        assert r.returncode == 0, r.stderr
        assert sorted(hub.downloads) == sorted(ia.FILES["sd15"].files)  # only the SD 1.5 adapter and its encoder
        assert "Downloading h94/IP-Adapter" in r.stderr
        first = list(hub.downloads)
        assert run_cli(instant_home, *args, env=env).returncode == 0
        assert hub.downloads == first
    r = run_cli(instant_home, *args, env={**env, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[-1])["mode"].startswith("instant mode"), r.stderr


def test_the_demo_model_says_it_cannot_use_the_adapter(instant_home):
    r = run_cli(instant_home, "generate", "--user", "astro", "--num-inference-steps", "2")
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert errors[0].startswith("error: The built-in demo model cannot use identity strength")
    assert "train a face LoRA for 'astro' first" in errors[0]  # automatic strength: off once a LoRA exists
    r = run_cli(instant_home, "generate", "--user", "astro", "--num-inference-steps", "2", "--ip-scale", "0.4")
    assert r.returncode == 2 and "set identity strength to 0, or choose a real model" in r.stderr, r.stderr


def paint_one(loaded, home: Path, template: Path, **cfg):
    from PIL import Image

    from easyphoto_app.faces import get_backend
    from easyphoto_app.portrait import paint, plan
    from easyphoto_app.settings import GenerateConfig, PortraitConfig
    from easyphoto_app.workspace import Workspace

    ws, gen = Workspace(home), GenerateConfig(num_inference_steps=4, width=64, height=64, scheduler="DDIM", **cfg)
    portrait = PortraitConfig(num=1, seed=3, fusion=False)  # fusion pastes the photo itself: the adapter alone here
    result = paint(loaded, ws, plan(ws, gen, portrait, "astro", template, get_backend("auto", home)))
    return result, np.asarray(Image.open(result.paths[0])).astype(int), result.parameters[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    import photos

    return photos.scene(tmp_path_factory.mktemp("templates") / "scene.jpg")


def test_portraits_follow_the_photos_in_instant_mode_and_not_with_the_adapter_off(pipes, cached, home_copy, template):
    loaded = pipes["sd15"]
    off, before, params = paint_one(loaded, home_copy, template, ip_scale=0)
    assert off.mode == "LoRA" and "ControlNet" not in params
    lora = home_copy / "loras" / "astro.safetensors"
    lora.rename(lora.with_suffix(".kept"))  # no LoRA: instant mode
    result, instant, params = paint_one(loaded, home_copy, template)
    assert result.mode.startswith("instant mode") and "Model: ip-adapter-plus-face_sd15 [" in params
    swap_faces(home_copy, "astro")
    x0, y0, side = result.box
    other = paint_one(loaded, home_copy, template)[1]
    assert np.abs(other - instant)[y0 : y0 + side, x0 : x0 + side].mean() > 2  # in the square painted
    lora.with_suffix(".kept").rename(lora)
    assert np.array_equal(paint_one(loaded, home_copy, template, ip_scale=0)[1], before)


def test_doctor_names_the_licence_of_each_model_held(tmp_path, hub_cache, adapter_repo, demo_model_dir):
    from easyphoto_app import doctor
    from easyphoto_app.settings import load_settings

    settings = load_settings(tmp_path / "data")
    settings.app.model = str(demo_model_dir)
    before = doctor.downloaded_licences(settings)
    assert before["base model"].startswith(f"{demo_model_dir}: its own licence (an SD 1.5 or SDXL base: CreativeML")
    assert not any(key.startswith("identity adapter") for key in before)
    install_in_cache(hub_cache, adapter_repo)
    after = doctor.downloaded_licences(settings)
    assert after["identity adapter (Stable Diffusion 1.5)"] == "h94/IP-Adapter ip-adapter-plus-face_sd15: Apache-2.0"
    assert after["identity adapter (SDXL)"] == "h94/IP-Adapter ip-adapter-plus-face_sdxl_vit-h: Apache-2.0"
    assert doctor.check(settings)["checks"]["licences"]["value"] == after
