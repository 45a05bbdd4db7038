"""The built-in demo model: the small face model shipped in assets/face_model, installed once into the data dir,
and the size it draws and trains at."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.families.sd15 import CONFIG as SD15_CONFIG
from easyphoto_app.settings import ASSETS

log = logging.getLogger(__name__)

DEMO = "demo"
DEMO_VERSION = 4  # 4: the face model trained on real photos (assets/face_model) replaces random weights
DEMO_RESOLUTION = 128  # what the demo pipeline generates and trains at (unless its marker says otherwise)
DEMO_RL_STEPS = 10  # the most DDIM steps RL samples the demo with
FACE_MODEL = ASSETS / "face_model"
DEMO_LABEL = (
    "Demo model (built in, offline): a tiny model trained on {photos} photos of {people} people; it paints "
    "small, rough faces at 128 px. A real SD 1.5 checkpoint paints far better."
)


def demo_marker(folder: Path) -> dict:
    """The demo folder's easyphoto_demo.json ({} if there is none): its version and what it was trained at."""
    marker = Path(folder) / "easyphoto_demo.json"
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}


def demo_label(folder: Path | None = None) -> str:
    """What the demo model is, in the words of its own marker (the shipped one's by default)."""
    return (
        demo_marker(folder or FACE_MODEL).get("label")
        or "Demo model (built in, offline): missing; reinstall EasyPhoto."
    )


def install_demo_model(folder: Path) -> Path:
    """Copy the shipped face model, with SD 1.5's tokenizer, into the data dir (staged, so a crash never leaves
    half a model)."""
    folder = Path(folder)
    if demo_marker(FACE_MODEL).get("version") != DEMO_VERSION:
        raise UserError(
            f"The built-in face model is missing from {FACE_MODEL}: reinstall EasyPhoto "
            "(or rebuild it with scripts/build_face_model.py)."
        )
    staging = folder.with_name(folder.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(FACE_MODEL, staging, ignore=shutil.ignore_patterns("README.md", "*.png"))
    shutil.copytree(SD15_CONFIG / "tokenizer", staging / "tokenizer")  # SD 1.5's own, shipped once in assets/sd15
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


_demo_lock = threading.Lock()


def ensure_demo_model(data_dir: Path) -> Path:
    folder = Path(data_dir) / "models" / "demo"
    with _demo_lock:
        if demo_marker(folder).get("version") == DEMO_VERSION:
            return folder
        log.info("Installing the demo model in %s", folder)
        return install_demo_model(folder)


def native_resolution(model, requested: int, training: bool = False) -> int:
    """The demo draws (and trains) at the size it was trained at; other models (a model_loading.ResolvedModel) at
    the size asked for."""
    if not model.is_demo:
        return requested
    marker = demo_marker(model.path) if getattr(model, "path", None) else {}
    return int(marker.get("train_resolution" if training else "resolution", DEMO_RESOLUTION))
