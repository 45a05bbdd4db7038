"""Shared fixtures: a data dir with the demo model built once, prepared and trained users."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class SessionDataHooks:
    @pytest.hookspec(firstresult=True)
    def pytest_easyphoto_session_data(self, factory, name, build):
        """The folder a session fixture's build made, from elsewhere than a fresh build (tests/mutmut_plugin.py: a
        copy of what the unmutated code built once), or None to build it."""


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(SessionDataHooks)


@pytest.fixture(scope="session")
def session_data(tmp_path_factory, pytestconfig):
    """session_data(name, build) -> what build(a fresh folder) returns: the data a session fixture builds once (a
    demo training, say), or what a plugin serves in its place (mutation testing)."""

    def made(name: str, build) -> Path:
        served = pytestconfig.hook.pytest_easyphoto_session_data(factory=tmp_path_factory, name=name, build=build)
        return served if served is not None else build(tmp_path_factory.mktemp(name))

    return made


TRAINING_FIXTURES = {"trained_home", "rl_home", "sdxl_home", "face_home", "te_home"}  # each trains a LoRA: minutes


@pytest.hookimpl(tryfirst=True)  # before -m reads the marks
def pytest_collection_modifyitems(items):
    """A test that needs a trained LoRA (directly or through another fixture) is slow, marked or not."""
    for item in items:
        if TRAINING_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


def run_cli(data_dir: Path, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "easyphoto_app", "--data-dir", str(data_dir), *args]
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def kill_9_when(data_dir: Path, args: list[str], marker: Path, timeout: float = 120) -> None:
    """Run the CLI in a child process and SIGKILL it as soon as `marker` exists (or it ends)."""
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "easyphoto_app", "--data-dir", str(data_dir), *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, getattr(signal, "SIGKILL", signal.SIGTERM))
    proc.wait()


@contextlib.contextmanager
def gpu_lock_held(data_dir: Path, kind: str, user: str):
    """Another process holding the GPU lock, as a job started from a terminal does; yields the process."""
    code = (
        "import sys, time; from easyphoto_app.jobs import GpuLock; from easyphoto_app.workspace import Workspace\n"
        f"with GpuLock(Workspace({str(data_dir)!r}), {kind!r}, {user!r}):\n"
        "    print('held', flush=True)\n    time.sleep(120)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "held\n"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running_app(data_dir: Path, env: dict | None = None, console: Path | None = None):
    """`python app.py` on a free port; yields its URL once it answers, stops it afterwards. `console` keeps
    what it prints (what a user sees in the terminal window)."""
    import time
    import urllib.request

    port = free_port()
    out = open(console, "wb") if console else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--no-browser", "--port", str(port), "--data-dir", str(data_dir)],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT if console else subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if console:
            out.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cli_process_state():
    """For tests that run cli.main() in this process: it adds log handlers and Ctrl+C handlers to the process it
    runs in, and each test gets them back as they were."""
    import logging
    import signal

    root, ours = logging.getLogger(), logging.getLogger("easyphoto_app")
    kept = {root: list(root.handlers), ours: list(ours.handlers)}
    level = root.level
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for logger, before in kept.items():
        for handler in [h for h in logger.handlers if h not in before]:
            logger.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for s, handler in handlers.items():
        signal.signal(s, handler)


@pytest.fixture(scope="session")
def demo_model_dir(session_data) -> Path:
    """The tests' fast random model (tests/tiny_model.py), installed as the demo. EASYPHOTO_TEST_DEMO=face runs
    them on the shipped face model instead (slower; what the README's screenshots are taken on)."""
    from tiny_model import build_random_model

    from easyphoto_app.demo_model import ensure_demo_model

    def build(base: Path) -> Path:
        if os.environ.get("EASYPHOTO_TEST_DEMO") == "face":
            return ensure_demo_model(base)
        return build_random_model(base / "models" / "demo")

    return session_data("demo-home", build)


@pytest.fixture(scope="module")
def demo_pipe(demo_model_dir):
    """The demo model in this process (a LoadedModel), loaded once per test file, as a plain diffusers folder (not
    labelled demo: the size asked for is used)."""
    import torch

    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import ResolvedModel, load_pipeline

    model = ResolvedModel("dir", "tiny", demo_model_dir)
    return LoadedModel(load_pipeline(model, "cpu", torch.float32), model)


@pytest.fixture
def data_dir(tmp_path, demo_model_dir) -> Path:
    """A fresh data dir whose settings use the (already built) demo model."""
    d = tmp_path / "data"
    shutil.copytree(demo_model_dir, d / "models" / "demo")
    d.mkdir(exist_ok=True)
    (d / "settings.toml").write_text('[app]\nmodel = "demo"\n')
    return d


@pytest.fixture(scope="session")
def astro_photos(tmp_path_factory) -> list[Path]:
    import photos

    return photos.astronaut_set(tmp_path_factory.mktemp("astro"))


@pytest.fixture(scope="session")
def trained_home(session_data, demo_model_dir, astro_photos) -> Path:
    """A data dir with user 'astro' prepared and a face LoRA trained (few steps)."""

    def build(base: Path) -> Path:
        d = base / "data"
        shutil.copytree(demo_model_dir, d / "models" / "demo")
        (d / "settings.toml").write_text('[app]\nmodel = "demo"\n')
        r = run_cli(d, "prepare", "--user", "astro", *map(str, astro_photos))
        assert r.returncode == 0, r.stderr
        r = run_cli(
            d,
            "train",
            "--user",
            "astro",
            "--max-train-steps",
            "4",
            "--checkpointing-steps",
            "2",
            "--rank",
            "4",
            "--lora-alpha",
            "2",
            "--learning-rate",
            "5e-3",
        )
        assert r.returncode == 0, r.stderr
        return d

    return session_data("trained", build)


@pytest.fixture(scope="session")
def rl_home(session_data, trained_home) -> Path:
    """trained_home plus an RL LoRA for 'astro' (one short epoch)."""

    def build(base: Path) -> Path:
        d = base / "data"
        shutil.copytree(trained_home, d)
        r = run_cli(
            d,
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
        return d

    return session_data("rlhome", build)


def _private_copy(tmp_path: Path, shared: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(shared, d)
    return d


@pytest.fixture
def home_copy(tmp_path, trained_home) -> Path:
    """A private copy of the trained data dir (tests may change it)."""
    return _private_copy(tmp_path, trained_home)


@pytest.fixture
def rl_copy(tmp_path, rl_home) -> Path:
    """A private copy of rl_home, for tests that count what is in it (other tests add images to rl_home, in an order
    that mutmut changes)."""
    return _private_copy(tmp_path, rl_home)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache that huggingface_hub looks in."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    return tmp_path


def cache_repo(cache: Path, repo_id: str, files: list[str]) -> Path:
    """A repo in the Hugging Face cache's layout, as a download leaves it; returns its snapshot folder."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name in files:
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text("{}")
    return snap


@pytest.fixture(scope="session")
def sdxl_dir(session_data):
    from tiny_model import build_tiny_sdxl

    return session_data("sdxl-model", lambda base: build_tiny_sdxl(base / "tiny-sdxl"))


@pytest.fixture(scope="session")
def sdxl_home(session_data, sdxl_dir, astro_photos):
    """A data dir on the tiny SDXL model: 'astro' prepared, a face LoRA trained with both text encoders, one RL
    epoch."""

    def build(base):
        d = base / "data"
        d.mkdir()
        (d / "settings.toml").write_text(f"[app]\nmodel = {json.dumps(str(sdxl_dir))}\n")
        for args in (
            ["prepare", "--user", "astro", *map(str, astro_photos)],
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
            r = run_cli(d, *args)
            assert r.returncode == 0, r.stderr
        return d

    return session_data("sdxl-home", build)
