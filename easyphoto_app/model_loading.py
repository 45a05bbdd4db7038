"""Which base model a spec names (hub id | local diffusers folder | single .safetensors file | demo), and loading it.

Only safetensors weights are ever loaded. Hub downloads go through hub.py (resumable, cached, never repeated). With
no network and nothing cached, the app falls back to the built-in demo model and says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from easyphoto_app import families
from easyphoto_app.checkpoints import checkpoint_family, list_checkpoints, load_single_file
from easyphoto_app.demo_model import DEMO, demo_label, ensure_demo_model
from easyphoto_app.errors import UserError
from easyphoto_app.hub import HubUnreachable, cached_hub_model, download_hub_model, hub_unreachable, human_size
from easyphoto_app.precision import pick_precision

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")


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
        if self.is_demo:
            return families.sd15
        if self.kind == "file":
            return checkpoint_family(self.path)
        return families.of_folder(self.path, self.source)

    @property
    def label(self) -> str:
        if self.is_demo:
            return demo_label(self.path)
        return f"{self.source} ({self.kind})"


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
    import torch  # here, not at the top: start-up (the CLI's refusals, the UI's first page) stays fast

    _quiet_local_loading()
    dtype = dtype or pick_precision("auto", device).dtype
    family = model.family
    common = {"dtype": dtype, "use_safetensors": True, **family.LOAD_KWARGS}
    if model.kind == "file":
        pipe = load_single_file(model.path, **common)
    else:
        # fp16 files when computing in fp16, or when they are all there is (a download made for a GPU, used on the CPU)
        half = [p.name.endswith(".fp16.safetensors") for p in model.path.glob("unet/*.safetensors")]
        variant = "fp16" if any(half) and (dtype == torch.float16 or all(half)) else None
        pipe = families.pipeline_class(family).from_pretrained(str(model.path), variant=variant, **common)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _quiet_local_loading() -> None:
    """Reading weights from disk takes a second or two: its progress bars are noise. (Downloads keep theirs:
    they are huggingface_hub's, switched separately.)"""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
