"""The real huggingface_hub download path, against a local hub (HF_ENDPOINT)."""

import json
import shutil

from conftest import run_cli
from hub_server import HubServer


def test_hub_model_downloads_once_then_works_offline(tmp_path, demo_model_dir, data_dir):
    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo)
    (repo / "easyphoto_demo.json").unlink()  # an ordinary diffusers repo, not our demo model
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickled weights must never be fetched")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    args = ["--model", "tiny/sd", "generate", "--num", "1", "--steps", "2", "--width", "64", "--height", "64", "--json"]
    with HubServer("tiny/sd", repo) as hub:
        env["HF_ENDPOINT"] = hub.url
        r = run_cli(data_dir, *args, env=env)
        assert r.returncode == 0, r.stderr
        assert "demo model" not in r.stderr.lower()
        assert "unet/diffusion_pytorch_model.safetensors" in hub.downloads
        assert not any(name.endswith(".bin") for name in hub.downloads)
        first = list(hub.downloads)
        r = run_cli(data_dir, *args, env=env)
        assert r.returncode == 0, r.stderr
        assert hub.downloads == first  # cached: nothing downloaded again
    r = run_cli(data_dir, *args, env=env)  # the hub is gone: the cache still serves
    assert r.returncode == 0 and "demo model" not in r.stderr.lower(), r.stderr
    from PIL import Image

    params = Image.open(json.loads(r.stdout.strip().splitlines()[-1])["paths"][0]).text["parameters"]
    assert "Model: sd" in params
    report = json.loads(run_cli(data_dir, "--model", "tiny/sd", "doctor", "--json", env=env).stdout)
    assert report["checks"]["base_model"]["value"] == "tiny/sd (downloaded)"


def test_unreachable_hub_falls_back_to_the_demo_model_and_says_so(data_dir, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = run_cli(data_dir, "--model", "tiny/absent", "generate", "--num", "1", "--steps", "2", env=env)
    assert r.returncode == 0, r.stderr
    assert "Using the built-in demo model because tiny/absent is not available" in r.stderr


def test_unknown_hub_model_is_one_clear_line(data_dir, demo_model_dir, tmp_path):
    with HubServer("tiny/sd", demo_model_dir) as hub:
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}
        r = run_cli(data_dir, "--model", "tiny/typo", "generate", "--num", "1", "--steps", "2", env=env)
    assert r.returncode == 2 and "tiny/typo was not found on the Hugging Face Hub" in r.stderr and "Traceback" not in r.stderr
