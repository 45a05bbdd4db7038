"""LoRA and training-state files, all safetensors (no pickle), all written atomically.

The final LoRA uses WebUI (kohya) keys: `lora_unet_*` / `lora_te_*` (SDXL: `lora_te1_*`, `lora_te2_*`) with
`.lora_down.weight`, `.lora_up.weight` and the true `.alpha` (diffusers' converter
writes alpha = rank, docs/design.md, pitfall 2), so A1111/ComfyUI read it as `<lora:ID:1>`
and diffusers' `load_lora_weights` reproduces the trained adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.families import sd15
from easyphoto_app.workspace import atomic_path, previous_lora, refused_when_disk_full

TE_KEY = re.compile(r"^(lora_te[12]?_)(?!text_model_)")  # a text encoder key without CLIP's `text_model_`


def peft_state(model, adapter: str, prefix: str) -> dict:
    """The adapter's LoRA tensors with `prefix.` keys (unet. / text_encoder.), on the CPU in fp32."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(model, adapter_name=adapter)
    return {f"{prefix}.{k}": v.detach().float().cpu().contiguous() for k, v in state.items()}


def to_kohya(state: dict, alpha: float, family=None) -> dict:
    """WebUI keys for `family` (SD 1.5's by default: its only text encoder is `lora_te_`)."""
    import torch
    from diffusers.utils import convert_state_dict_to_kohya

    kohya = convert_state_dict_to_kohya(state)
    out = {}
    for key, value in kohya.items():
        # transformers 5 names CLIP's modules without `text_model.`; WebUIs expect the checkpoints' names
        key = TE_KEY.sub(r"\1text_model_", (family or sd15).kohya_key(key))
        out[key] = torch.tensor(float(alpha)) if key.endswith(".alpha") else value
    return out


def save_lora(path: Path, state: dict, alpha: float, metadata: dict, owner: str | None = None, family=None) -> Path:
    """Write a WebUI-format LoRA atomically. Refuses to replace a file that belongs to someone else."""
    from safetensors.torch import save as safetensors_save

    path = Path(path)
    if owner is not None and path.exists():
        current = read_metadata(path).get("easyphoto_user")
        if current and current != owner:
            raise UserError(f"{path.name} belongs to user '{current}'; refusing to overwrite it with '{owner}'s LoRA.")
    meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in metadata.items()}
    tensors = to_kohya(state, alpha, family)
    data = safetensors_save(tensors)
    # A1111's hash of a LoRA covers the tensor bytes after the header, so it can go into the header itself
    meta["sshs_model_hash"] = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little") :]).hexdigest()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(safetensors_save(tensors, metadata=meta))
    return path


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def save_tensors(path: Path, tensors: dict, metadata: dict | None = None) -> None:
    with atomic_path(path) as tmp:
        _write_tensors(tmp, tensors, metadata)


def _write_tensors(path: Path, tensors: dict, metadata: dict | None) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
        str(path),
        metadata={k: json.dumps(v) for k, v in (metadata or {}).items()},
    )


def load_tensors(path: Path) -> tuple[dict, dict]:
    """The tensors of a file that save_tensors wrote, and its metadata decoded (load_metadata)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    return tensors, load_metadata(path)


def load_metadata(path: Path) -> dict:
    """The JSON metadata of a file that save_tensors wrote (a checkpoint's settings, progress), without its tensors."""
    return {k: json.loads(v) for k, v in read_metadata(path).items()}


def optimizer_tensors(optimizer) -> tuple[dict, dict]:
    """An optimizer's state as flat tensors + JSON-able param groups (safetensors has no pickle)."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"opt.{idx}.{name}"] = value if hasattr(value, "shape") else __import__("torch").tensor(value)
    return tensors, {"param_groups": sd["param_groups"]}


def restore_optimizer(optimizer, tensors: dict, meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_checkpoint_dir(target: Path, files: dict[str, tuple[dict, dict]]) -> Path:
    """Write several safetensors files into a folder that appears in one rename (all or nothing)."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with refused_when_disk_full(target.parent, f"checkpoint {target.name}"):
            staging.mkdir(parents=True)
            for name, (tensors, meta) in files.items():
                _write_tensors(staging / name, tensors, meta)  # the folder's rename below is the atomic step
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def complete_checkpoints(folder: Path, prefix: str) -> list[Path]:
    """Checkpoint folders sorted by their number (half-written staging folders are ignored)."""
    if not Path(folder).is_dir():
        return []
    found = [p for p in Path(folder).iterdir() if p.is_dir() and p.name.startswith(prefix + "-")]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


def set_aside_previous(lora: Path, checkpoints: list[Path], keep: Path | None = None) -> None:
    """Before a new run (not a resume): the last run's LoRA is kept as <name>.prev.safetensors and one of its
    checkpoints (`keep`, else the newest) in previous/ beside them; the others go, so that a crash now cannot
    resume the older run."""
    if lora.exists():
        with atomic_path(previous_lora(lora)) as tmp:
            shutil.copyfile(lora, tmp)
    if not checkpoints:
        return
    keep = keep or checkpoints[-1]
    shelf = keep.parent / "previous"
    shutil.rmtree(shelf, ignore_errors=True)
    shelf.mkdir()
    keep.rename(shelf / keep.name)
    for old in checkpoints:
        if old != keep:
            shutil.rmtree(old)
