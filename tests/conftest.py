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

if os.environ.get("MUTANT_UNDER_TEST"):  # under mutmut (scripts/mutate.py): see tests/mutmut_child/sitecustomize.py
    import tempfile

    os.environ["EASYPHOTO_MUTMUT_HITS"] = tempfile.mkdtemp(prefix="mutmut-hits-")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent / "mutmut_child"), os.environ.get("PYTHONPATH")])
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """mutmut's stats run: count what the CLI processes of this test ran as reached by it."""
    folder = os.environ.get("EASYPHOTO_MUTMUT_HITS")
    if not folder or os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return
    from mutmut.state import state

    for hits in Path(folder).glob("*.txt"):
        state()._stats.update(hits.read_text(encoding="utf-8").split())
        hits.unlink()


def _mutant_run() -> bool:
    """True in mutmut's run of the unmutated tests and in a process that tests one mutant (not in mutmut's stats,
    forced-fail or listing runs, not in a plain run). The unmutated run builds the fixtures: a mutant's run has a
    time limit that a demo training does not fit in."""
    return os.environ.get("MUTANT_UNDER_TEST") not in (None, "stats", "fail", "list_all_tests")


@contextlib.contextmanager
def _unmutated():
    """Everything run inside, CLI children too, runs the original functions (mutmut's trampolines call the
    original when the active mutant names no module)."""
    saved = os.environ["MUTANT_UNDER_TEST"]
    os.environ["MUTANT_UNDER_TEST"] = ""
    try:
        yield
    finally:
        os.environ["MUTANT_UNDER_TEST"] = saved


def _source_version() -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((ROOT / "easyphoto_app").rglob("*.py")) + [Path(__file__), Path(__file__).parent / "photos.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def session_data(tmp_path_factory, name: str, build) -> Path:
    """build(folder) -> the path a session fixture returns. Under a mutant, a copy of what the unmutated code built
    once for this version of the source: a mutant then costs its tests, not a demo training (minutes) per mutant.
    A mutant in code that only fixtures run survives here; the report shows it, so it is not hidden."""
    if not _mutant_run():
        return build(tmp_path_factory.mktemp(name))
    import fcntl
    import tempfile

    cache = Path(tempfile.gettempdir()) / "easyphoto-mutmut-fixtures" / _source_version()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # mutmut tests several mutants at once: one of them builds, the rest wait
        if not (cache / name).exists():
            folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache))
            with _unmutated():
                built = build(folder)
            (cache / f"{name}.path").write_text(str(built.relative_to(folder)))
            folder.rename(cache / name)
    copy = tmp_path_factory.mktemp(name)
    shutil.copytree(cache / name, copy, dirs_exist_ok=True)
    return copy / (cache / f"{name}.path").read_text()


UNCACHED_FIXTURES = {"prepared", "set_with_strangers"}  # module fixtures that run `prepare`: rebuilt per mutant


def pytest_collection_modifyitems(config, items):
    """./run.sh mutate --fast: the slow tests stay out of mutant runs (scripts/mutate.py lists them), and the tests a
    mutant runs go fastest first. mutmut stops at the first failure, and a slow test that happens to come first in
    file order can outlast the mutant's time limit (set from the tests' own times, without their fixtures)."""
    listed = os.environ.get("EASYPHOTO_MUTATE_SKIP")
    if not listed or os.environ.get("MUTANT_UNDER_TEST") == "stats":
        return
    slow = set(Path(listed).read_text(encoding="utf-8").splitlines())  # a parametrized test's id may hold spaces
    keep = [item for item in items if item.nodeid not in slow]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid in slow])
    stats = Path(listed).with_name("mutmut-stats.json")
    if _mutant_run() and stats.exists():
        took = json.loads(stats.read_text(encoding="utf-8"))["duration_by_test"]

        def cost(item) -> float:  # mutmut times the test alone; these fixtures run the CLI in each mutant's run
            return took.get(item.nodeid, float("inf")) + 60 * bool(UNCACHED_FIXTURES & set(item.fixturenames))

        keep.sort(key=cost)  # stable: file order among equals
    items[:] = keep


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
def demo_model_dir(tmp_path_factory) -> Path:
    """The tests' fast random model (tests/tiny_model.py), installed as the demo. EASYPHOTO_TEST_DEMO=face runs
    them on the shipped face model instead (slower; what the README's screenshots are taken on)."""
    from tiny_model import build_random_model

    from easyphoto_app.demo_model import ensure_demo_model

    def build(base: Path) -> Path:
        if os.environ.get("EASYPHOTO_TEST_DEMO") == "face":
            return ensure_demo_model(base)
        return build_random_model(base / "models" / "demo")

    return session_data(tmp_path_factory, "demo-home", build)


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
def trained_home(tmp_path_factory, demo_model_dir, astro_photos) -> Path:
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

    return session_data(tmp_path_factory, "trained", build)


@pytest.fixture(scope="session")
def rl_home(tmp_path_factory, trained_home) -> Path:
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

    return session_data(tmp_path_factory, "rlhome", build)


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
def sdxl_dir(tmp_path_factory):
    from tiny_model import build_tiny_sdxl

    return session_data(tmp_path_factory, "sdxl-model", lambda base: build_tiny_sdxl(base / "tiny-sdxl"))


@pytest.fixture(scope="session")
def sdxl_home(tmp_path_factory, sdxl_dir, astro_photos):
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

    return session_data(tmp_path_factory, "sdxl-home", build)
