"""The real huggingface_hub download path, against a local hub (HF_ENDPOINT)."""

import json
import re
import shutil

import pytest
from conftest import run_cli
from hub_server import HubServer


@pytest.mark.slow
def test_hub_model_downloads_once_then_works_offline(tmp_path, demo_model_dir, data_dir):
    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo)
    (repo / "easyphoto_demo.json").unlink()  # an ordinary diffusers repo, not our demo model
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickled weights must never be fetched")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    args = [
        "--model",
        "tiny/sd",
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
    ]
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


@pytest.mark.slow
def test_unreachable_hub_falls_back_to_the_demo_model_and_says_so(data_dir, tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = run_cli(data_dir, "--model", "tiny/absent", "generate", "--num", "1", "--num-inference-steps", "2", env=env)
    assert r.returncode == 0, r.stderr
    assert "Using the built-in demo model because tiny/absent is not available" in r.stderr


def test_unknown_hub_model_is_one_clear_line(data_dir, demo_model_dir, tmp_path):
    with HubServer("tiny/sd", demo_model_dir) as hub:
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url}
        r = run_cli(data_dir, "--model", "tiny/typo", "generate", "--num", "1", "--num-inference-steps", "2", env=env)
    assert (
        r.returncode == 2
        and "tiny/typo was not found on the Hugging Face Hub" in r.stderr
        and "Traceback" not in r.stderr
    )


def plain_repo(tmp_path, demo_model_dir):
    """The demo model as an ordinary diffusers repository."""
    repo = tmp_path / "repo"
    shutil.copytree(demo_model_dir, repo)
    (repo / "easyphoto_demo.json").unlink()
    return repo


def hub_env(tmp_path, hub) -> dict:
    return {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_ENDPOINT": hub.url}


def one_line_refusal(r) -> str:
    """The refusal, after checking it is one line on stderr with exit 2, no traceback and no demo model."""
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "demo model" not in r.stderr.lower(), r.stderr
    return errors[0]


GENERATE = ["generate", "--num", "1", "--num-inference-steps", "2", "--width", "64", "--height", "64"]
UNET = "unet/diffusion_pytorch_model.safetensors"


def test_a_gated_model_says_how_to_log_in_and_trains_nothing_on_the_demo(tmp_path, demo_model_dir, home_copy):
    lora = home_copy / "loras" / "astro.safetensors"
    before = (lora.read_bytes(), sorted(home_copy.rglob("*.png")), sorted((home_copy / "users").rglob("*")))
    with HubServer("someorg/gated-model", plain_repo(tmp_path, demo_model_dir)) as hub:
        hub.gated = True  # the model page and file list are public; every file answers 401
        env = hub_env(tmp_path, hub)
        for command in (GENERATE, ["train", "--user", "astro", "--max-train-steps", "2"]):
            line = one_line_refusal(run_cli(home_copy, "--model", "someorg/gated-model", *command, env=env))
            assert line == (
                f"error: someorg/gated-model is a gated model: it downloads only for a logged-in account "
                f"that accepted its terms. Open {hub.url}/someorg/gated-model and accept them, then log in "
                "once with 'hf auth login' (or set HF_TOKEN to an access token) and try again."
            )
    after = (lora.read_bytes(), sorted(home_copy.rglob("*.png")), sorted((home_copy / "users").rglob("*")))
    assert after[:2] == before[:2]  # no LoRA trained, no image painted
    assert set(after[2]) - set(before[2]) <= {home_copy / "users" / "astro" / "lora" / "events.jsonl"}


def test_a_model_bigger_than_the_free_space_says_how_much_is_needed_and_where(tmp_path, demo_model_dir, data_dir):
    with HubServer("tiny/sd", plain_repo(tmp_path, demo_model_dir)) as hub:
        env = hub_env(tmp_path, hub)
        hub.reported_sizes = {UNET: shutil.disk_usage(tmp_path).free + 3 * 2**30}
        line = one_line_refusal(run_cli(data_dir, "--model", "tiny/sd", *GENERATE, env=env))
        assert not [name for name in hub.downloads if name.endswith(".safetensors")]  # refused before the weights
    need, free = map(
        float,
        re.match(
            r"error: Not enough free disk space for downloading tiny/sd: need about "
            r"([\d.]+) GB, ([\d.]+) GB free",
            line,
        ).groups(),
    )
    assert need >= round(hub.reported_sizes[UNET] / 2**30, 1) > free
    assert line.endswith(
        f"GB free on the drive holding {tmp_path / 'hf' / 'hub'}. Free some space (or set HF_HOME "
        "to a folder on a bigger drive) and try again."
    ), line


@pytest.mark.slow
def test_a_download_cut_off_says_run_again_and_the_next_run_fetches_only_the_rest(tmp_path, demo_model_dir, data_dir):
    repo = plain_repo(tmp_path, demo_model_dir)
    unet = (repo / UNET).stat().st_size
    with HubServer("tiny/sd", repo) as hub:
        env = hub_env(tmp_path, hub)
        hub.cut_after = {UNET: unet // 2}  # half the UNet arrives, then the network is gone for good
        line = one_line_refusal(run_cli(data_dir, "--model", "tiny/sd", *GENERATE, env=env))
        kept, total = map(
            float,
            re.fullmatch(
                r"error: The download of tiny/sd was cut off: ([\d.]+) MB of ([\d.]+) MB arrived and is kept\. Run the "
                r"same command again when the connection is back: it downloads only what is missing\.",
                line,
            ).groups(),
        )
        assert abs(total - kept - unet / 2**20) < 0.1  # everything but the UNet
        hub.cut_after, first = {}, len(hub.downloads)
        r = run_cli(data_dir, "--model", "tiny/sd", *GENERATE, env=env)
        assert r.returncode == 0 and "demo model" not in r.stderr.lower(), r.stderr
    assert hub.downloads[first:] == [UNET]


def test_a_disk_that_fills_during_the_download_is_one_clear_line(tmp_path, demo_model_dir, data_dir):
    """The disk fills while a file is written: huggingface_hub's writer is made to fail as a full disk does, in the
    CLI's process (a sitecustomize on its path)."""
    hook = tmp_path / "full_disk"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import errno\nfrom huggingface_hub import file_download\n\n"
        "def full_disk(url, temp_file, **kw):\n"
        "    temp_file.write(b'x' * 1000)\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n\n"
        "file_download.http_get = full_disk\n"
    )
    with HubServer("tiny/sd", plain_repo(tmp_path, demo_model_dir)) as hub:
        env = {**hub_env(tmp_path, hub), "PYTHONPATH": str(hook)}
        line = one_line_refusal(run_cli(data_dir, "--model", "tiny/sd", *GENERATE, env=env))
    assert line.startswith("error: Not enough free disk space for downloading tiny/sd: need about "), line
    assert f"free on the drive holding {tmp_path / 'hf' / 'hub'}. Free some space (or set HF_HOME" in line, line
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.name.endswith(".incomplete")]  # no part left behind


def test_a_job_shows_its_base_model_arriving(tmp_path, demo_model_dir, home_copy):
    repo = plain_repo(tmp_path, demo_model_dir)
    with HubServer("tiny/sd", repo) as hub:
        r = run_cli(
            home_copy,
            "--model",
            "tiny/sd",
            "train",
            "--user",
            "astro",
            "--max-train-steps",
            "1",
            "--rank",
            "4",
            "--resolution",
            "64",
            env=hub_env(tmp_path, hub),
        )
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in (home_copy / "users" / "astro" / "lora" / "events.jsonl").open()]
    events = events[max(i for i, e in enumerate(events) if e["type"] == "done" and e is not events[-1]) + 1 :]
    arriving = [e for e in events if e["type"] == "progress" and e.get("phase") == "downloading the base model (MB)"]
    size_mb = sum(f.stat().st_size for f in repo.rglob("*.safetensors")) // 2**20
    assert arriving[-1]["step"] == arriving[-1]["total"] >= size_mb and arriving[0]["step"] < size_mb
    assert {e["total"] for e in arriving} == {arriving[-1]["total"]}  # the whole is known from the start
    assert [e["step"] for e in arriving] == sorted(e["step"] for e in arriving)
    assert events.index(arriving[-1]) < next(
        i for i, e in enumerate(events) if e.get("phase") is None and e["type"] == "progress"
    )  # then the training's own steps
