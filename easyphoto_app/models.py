"""Base model manager: hub id | local diffusers folder | single .safetensors file | demo.

Only safetensors weights are ever loaded. Hub downloads go through huggingface_hub
(resumable, cached, never repeated). With no network and nothing cached, the app
falls back to the built-in demo model and says so.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.hub import (  # noqa: F401 - hub downloads moved to hub.py; their old names still work here
    HubUnreachable,
    _check_hub_family,
    _pick_hub_files,
    cached_hub_model,
    download_hub_model,
    hub_unreachable,
    human_size,
)

log = logging.getLogger(__name__)

DEMO = "demo"
DEMO_VERSION = 4  # 4: the face model trained on real photos (assets/face_model) replaces random weights
DEMO_RESOLUTION = 128  # what the demo pipeline generates and trains at (unless its marker says otherwise)
DEMO_RL_STEPS = 10  # the most DDIM steps RL samples the demo with
FACE_MODEL = Path(__file__).resolve().parent.parent / "assets" / "face_model"
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
DEMO_LABEL = (
    "Demo model (built in, offline): a tiny model trained on {photos} photos of {people} people; it paints "
    "small, rough faces at 128 px. A real SD 1.5 checkpoint paints far better."
)


@dataclass
class ResolvedModel:
    kind: str  # demo | hub | dir | file
    source: str  # what the user asked for
    path: Path
    note: str = ""  # e.g. why we fell back to the demo model

    @property
    def is_demo(self) -> bool:
        return self.kind == DEMO

    @cached_property
    def family(self):
        """The model's family module (families.sd15 or families.sdxl); anything else is refused in one line."""
        from easyphoto_app import families

        if self.is_demo:
            return families.sd15
        if self.kind == "file":
            from easyphoto_app.checkpoints import checkpoint_family

            return checkpoint_family(self.path)
        return families.of_folder(self.path, self.source)

    @property
    def label(self) -> str:
        if self.is_demo:
            return demo_label(self.path)
        return f"{self.source} ({self.kind})"


def demo_label(folder: Path | None = None) -> str:
    """What the demo model is, in the words of its own marker (the shipped one's by default)."""
    return (
        demo_marker(folder or FACE_MODEL).get("label")
        or "Demo model (built in, offline): missing; reinstall EasyPhoto."
    )


# ----------------------------------------------------------------------------- device


def pick_device(pref: str = "auto") -> str:
    import torch

    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if pref == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if pref == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but PyTorch sees no CUDA GPU (run 'doctor' for details).")
    if pref == "mps" and not has_mps:
        raise UserError("--device mps was asked for, but this machine has no Apple GPU available to PyTorch.")
    if pref not in ("cuda", "mps", "cpu"):
        raise UserError(f"Unknown device {pref!r}: use auto, cuda, mps or cpu.")
    return pref


# ----------------------------------------------------------------------------- demo model


def demo_marker(folder: Path) -> dict:
    """The demo folder's easyphoto_demo.json ({} if there is none): its version and what it was trained at."""
    marker = Path(folder) / "easyphoto_demo.json"
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return {}


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
    from easyphoto_app.checkpoints import SD15_CONFIG

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


# ----------------------------------------------------------------------------- resolution


def _looks_like_path(spec: str) -> bool:
    return (
        spec.startswith((".", "/", "~", "\\"))
        or "\\" in spec
        or (len(spec) > 1 and spec[1] == ":")
        or spec.count("/") > 1
    )


def resolve_model(
    spec: str, data_dir: Path, device: str = "cpu", download: bool = True, progress=None
) -> ResolvedModel:
    """What `spec` names, downloaded if it must be (`progress(bytes, total)` hears the download)."""
    spec = (spec or "").strip() or DEMO
    if spec == DEMO:
        return ResolvedModel(DEMO, spec, ensure_demo_model(data_dir))
    if spec.lower().endswith(PICKLE_SUFFIXES):
        raise UserError(
            f"{spec} is a pickled checkpoint, which can run arbitrary code when loaded. "
            "Use the .safetensors version of this model instead (most model pages offer one)."
        )
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_dir() and (path / "model_index.json").exists():
            return ResolvedModel("dir", spec, path.resolve())
        if path.is_file() and path.suffix == ".safetensors":
            return ResolvedModel("file", spec, path.resolve())
        if path.is_dir():
            return _one_checkpoint_of(path, spec)
        raise UserError(f"{spec} is neither a diffusers model folder (with model_index.json) nor a .safetensors file.")
    if _looks_like_path(spec):
        raise UserError(f"Model path {spec} does not exist.")
    cached = cached_hub_model(spec)
    if cached is not None:
        return ResolvedModel("hub", spec, cached)
    if not download:  # asked before any job runs (a panel's defaults): nothing has fallen back yet, nothing to log
        return _demo_fallback(spec, data_dir, "it is not downloaded yet", quiet=True)
    offline = hub_unreachable(spec)
    if offline:
        return _demo_fallback(spec, data_dir, "it is not downloaded and the Hub cannot be reached", offline)
    try:
        path, size = download_hub_model(spec, device == "cuda", progress=progress)
    except HubUnreachable as exc:  # the only failure the demo stands in for: any other is refused in one line
        return _demo_fallback(spec, data_dir, "the connection to the Hub failed before the download began", str(exc))
    return ResolvedModel("hub", spec, path, note=f"Downloaded {spec} ({human_size(size)}).")


def _one_checkpoint_of(folder: Path, spec: str) -> ResolvedModel:
    """A folder of single-file checkpoints (a WebUI's models/Stable-diffusion): its only one, or the list to
    pick from."""
    from easyphoto_app.checkpoints import list_checkpoints

    found = list_checkpoints(folder)
    if len(found) == 1:
        return ResolvedModel("file", str(found[0]), found[0].resolve())
    if not found:
        raise UserError(f"{spec} holds no .safetensors checkpoint (nor model_index.json of a diffusers model).")
    names = ", ".join(p.name for p in found)
    raise UserError(f"{spec} holds {len(found)} checkpoints; choose one: {names} (e.g. --model {found[0]}).")


def _demo_fallback(spec: str, data_dir: Path, why: str, detail: str = "", quiet: bool = False) -> ResolvedModel:
    """The demo model in place of `spec`, with a one-line note for the page; `detail` (an errno, say) goes to the
    log only."""
    note = (
        f"Using the built-in demo model because {spec} is not available: {why}. Connect to the internet and "
        f"choose the model in Settings (or run 'python -m easyphoto_app --model {spec} doctor') to download it "
        "once."
    )
    if not quiet:
        log.warning("%s%s", note, f" ({detail})" if detail else "")
    return ResolvedModel(DEMO, spec, ensure_demo_model(data_dir), note=note)


# ----------------------------------------------------------------------------- loading


def load_pipeline(model: ResolvedModel, device: str, dtype=None):
    """The family's text-to-image pipeline on `device` (safetensors only, no safety checker); `dtype` defaults to
    auto's."""
    import torch

    from easyphoto_app.families import pipeline_class
    from easyphoto_app.precision import pick_precision

    _quiet_local_loading()
    dtype = dtype or pick_precision("auto", device).dtype
    family = model.family
    common = {"dtype": dtype, "use_safetensors": True, **family.LOAD_KWARGS}
    if model.kind == "file":
        from easyphoto_app.checkpoints import load_single_file

        pipe = load_single_file(model.path, **common)
    else:
        # fp16 files when computing in fp16, or when they are all there is (a download made for a GPU, used on the CPU)
        half = [p.name.endswith(".fp16.safetensors") for p in model.path.glob("unet/*.safetensors")]
        variant = "fp16" if any(half) and (dtype == torch.float16 or all(half)) else None
        pipe = pipeline_class(family).from_pretrained(str(model.path), variant=variant, **common)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _quiet_local_loading() -> None:
    """Reading weights from disk takes a second or two: its progress bars are noise. (Downloads keep theirs:
    they are huggingface_hub's, switched separately.)"""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


@contextmanager
def vae_in_safe_dtype(vae):
    """An autoencoder whose config says it overflows in fp16 (`force_upcast`: SDXL's) runs in fp32 inside this block,
    as diffusers' own pipelines decode it; any other stays as it is."""
    import torch

    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae
    finally:
        if upcast:
            vae.to(torch.float16)


def native_resolution(model: ResolvedModel, requested: int, training: bool = False) -> int:
    """The demo draws (and trains) at the size it was trained at; other models at the size asked for."""
    if not model.is_demo:
        return requested
    marker = demo_marker(model.path) if getattr(model, "path", None) else {}
    return int(marker.get("train_resolution" if training else "resolution", DEMO_RESOLUTION))


def pipeline_over(pipe, key, make):
    """A pipeline built by make() from pipe's loaded components (from_pipe: no second UNet), kept on pipe under
    `key` and made again only when the key changes; it shows progress as pipe does."""
    cached = pipe.__dict__.get("_ep_derived", {}).get(key[0])
    if cached is not None and cached[0] == key:
        return cached[1]
    derived = make()
    derived.set_progress_bar_config(**getattr(pipe, "_progress_bar_config", {}))
    pipe.__dict__.setdefault("_ep_derived", {})[key[0]] = (key, derived)
    return derived


class PipelineCache:
    """Keeps one loaded pipeline per process; a different model replaces it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._pipe = None
        self.model: ResolvedModel | None = None

    def get(self, settings):
        """The pipeline of settings.app's model, device and precision."""
        from easyphoto_app.precision import pick_precision

        app = settings.app
        device = pick_device(app.device)
        precision = pick_precision(app.precision, device)
        with self._lock:
            model = resolve_model(app.model, settings.data_dir, device)
            key = (model.kind, str(model.path), device, precision.name)
            if key != self._key:
                self._pipe = None  # free the old one before loading the new one
                self._pipe = load_pipeline(model, device, precision.dtype)
                self._key = key
            self.model = model  # the demo chosen on purpose has no fallback note, even with the same pipeline
            return self._pipe, self.model

    def clear(self):
        with self._lock:
            self._pipe, self._key, self.model = None, None, None
