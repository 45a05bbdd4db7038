"""`doctor`: what this machine has, what is missing, and the fix for each."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from pathlib import Path

# demo_model, device and hub by module: the tests point FACE_MODEL, pick_device and cached_hub_model elsewhere.
from easyphoto_app import demo_model, device, families, hub, identity_adapter
from easyphoto_app.demo_model import DEMO, DEMO_VERSION, demo_label, demo_marker
from easyphoto_app.precision import pick_precision, pick_rl_precision
from easyphoto_app.settings import Settings
from easyphoto_app.workspace import free_bytes

LOW_DISK_GB = 15


def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def check(settings: Settings) -> dict:
    """Every check is {ok, value, fix}; 'ok' False means the user should act."""
    checks: dict[str, dict] = {}
    py_ok = sys.version_info >= (3, 10)
    checks["python"] = {
        "ok": py_ok,
        "value": platform.python_version(),
        "fix": None if py_ok else "Install Python 3.10 or newer.",
    }
    for pkg in ("torch", "diffusers", "peft", "transformers", "accelerate", "gradio", "insightface", "onnxruntime"):
        v = _version(pkg)
        checks[pkg] = {
            "ok": v is not None,
            "value": v,
            "fix": None if v else "Run ./run.sh --install-only (or run.bat) to install it.",
        }
    checks["device"] = _device_check(settings.app.device)
    checks["precision"] = _precision_check(settings.app, checks["device"])
    checks["disk"] = _disk_check(settings.data_dir)
    checks["data_dir"] = _writable_check(settings.data_dir)
    checks["base_model"] = _model_check(settings)
    checks["face_models"] = _face_check(settings)
    checks["licences"] = _licence_check(settings)
    return {"ok": all(c["ok"] for c in checks.values()), "data_dir": str(settings.data_dir), "checks": checks}


def _device_check(pref: str) -> dict:
    try:
        import torch
    except ImportError:
        return {"ok": False, "value": None, "fix": "PyTorch is missing: run ./run.sh --install-only."}
    try:
        picked = device.pick_device(pref)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "value": pref, "fix": str(exc)}
    value = {"device": picked, "torch_cuda": torch.version.cuda}
    if picked == "cuda":
        props = torch.cuda.get_device_properties(0)
        value.update(name=props.name, vram_gb=round(props.total_memory / 2**30, 1))
    fix = (
        None if picked != "cpu" else "No GPU found: everything works on the CPU, but training real models is very slow."
    )
    return {"ok": True, "value": value, "fix": fix}


def _precision_check(app, device_check: dict) -> dict:
    """What --precision resolves to on this device, and why."""
    value = device_check.get("value")
    device = value["device"] if isinstance(value, dict) else "cpu"
    try:
        p, rl = pick_precision(app.precision, device), pick_rl_precision(app.precision, device)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "value": app.precision, "fix": str(exc)}
    fix = None
    if p.is_half and device == "cpu":
        fix = f"{p.name} on the CPU runs the GPU's code path but is much slower than fp32: use --precision auto."
    rl_note = "" if rl.name == p.name else f"; RL: {rl.name} ({rl.reason})"
    return {"ok": True, "value": f"{p.name} ({p.reason}){rl_note}", "fix": fix}


def _disk_check(data_dir: Path) -> dict:
    free_gb = free_bytes(data_dir) / 2**30
    ok = free_gb >= LOW_DISK_GB
    need = f"Free disk space: a model (SD 1.5 or SDXL), the identity adapter and training take about {LOW_DISK_GB} GB."
    return {"ok": ok, "value": f"{free_gb:.1f} GB free", "fix": None if ok else need}


def _writable_check(data_dir: Path) -> dict:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        return {"ok": True, "value": str(data_dir), "fix": None}
    except OSError as exc:
        return {
            "ok": False,
            "value": str(data_dir),
            "fix": f"The data folder is not writable ({exc}); choose another with --data-dir or EASYPHOTO_HOME.",
        }


def _model_check(settings: Settings) -> dict:
    spec = settings.app.model
    if spec == DEMO:
        shipped = demo_marker(demo_model.FACE_MODEL).get("version") == DEMO_VERSION
        return {
            "ok": shipped,
            "value": demo_label(),
            "fix": "Choose a real model (e.g. the default SD 1.5) in Settings for real portraits."
            if shipped
            else f"The built-in face model is missing from {demo_model.FACE_MODEL}: reinstall EasyPhoto.",
        }
    path = Path(spec).expanduser()
    if path.exists():
        return {"ok": True, "value": f"{spec} (local)", "fix": None}
    if hub.cached_hub_model(spec):
        return {"ok": True, "value": f"{spec} (downloaded)", "fix": None}
    return {
        "ok": False,
        "value": f"{spec} (not downloaded)",
        "fix": "It downloads (about 2-4 GB) on first use when online; until then the demo model is used.",
    }


def _face_check(settings: Settings) -> dict:
    from easyphoto_app.faces import backend_status  # noqa: PLC0415 - start-up (numpy)

    return backend_status(settings)


# The families' own licences (a fine-tuned model may add terms of its own: its page says)
FAMILY_LICENCES = {"sd15": "CreativeML OpenRAIL-M", "sdxl": "CreativeML OpenRAIL++-M"}


def downloaded_licences(settings: Settings) -> dict[str, str]:
    """Each model this machine holds and uses, named with its licence."""
    from easyphoto_app.controlnet import CANNY_REPO, cached_controlnet  # noqa: PLC0415 - start-up (numpy)
    from easyphoto_app.faces.insight import InsightFaceBackend, insightface_model_dir  # noqa: PLC0415 - start-up

    found = {}
    spec = settings.app.model
    if spec == DEMO:
        found["base model"] = "the built-in demo model (EasyPhoto's own)"
    elif Path(spec).expanduser().exists() or hub.cached_hub_model(spec):
        found["base model"] = f"{spec}: its own licence (an SD 1.5 or SDXL base: {', '.join(FAMILY_LICENCES.values())})"
    for family in families.FAMILIES:
        if identity_adapter.cached_adapter(family):
            name = identity_adapter.adapter_files(family).name
            found[f"identity adapter ({family.LABEL})"] = f"{identity_adapter.REPO} {name}: {identity_adapter.LICENCE}"
    if cached_controlnet():
        found["structure control"] = f"{CANNY_REPO}: OpenRAIL"
    if InsightFaceBackend.models_present(insightface_model_dir(settings.data_dir)):
        found["face models"] = "insightface buffalo_l: non-commercial research use only"
    return found


def _licence_check(settings: Settings) -> dict:
    """Informational: what may be done with the pictures depends on these (the face models' terms and what to use
    instead are the face check's note)."""
    try:
        found = downloaded_licences(settings)
    except Exception as exc:  # noqa: BLE001 - a licence list never fails the doctor
        return {"ok": True, "value": f"unknown ({exc})", "fix": None}
    return {"ok": True, "value": found or "no model downloaded yet", "fix": None}


def value_text(value) -> str:
    """A check's value in words (a dict becomes "key: value, ...")."""
    if isinstance(value, dict):
        return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in value.items() if v is not None)
    return "" if value is None else str(value)


def render_markdown(report: dict) -> str:
    """The same sentences as `render`, as a table for the web page."""

    def cell(text) -> str:
        return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")

    lines = [f"Data folder: `{report['data_dir']}`", "", "| check | state | value | what to do |", "|---|---|---|---|"]
    for name, c in report["checks"].items():
        lines.append(
            f"| {name} | {'✔ ok' if c['ok'] else '⚠️ fix'} | {cell(value_text(c['value']))} | {cell(c.get('fix'))} |"
        )
    return "\n".join(lines)


def render(report: dict) -> str:
    lines = [f"EasyPhoto doctor - data dir: {report['data_dir']}"]
    for name, c in report["checks"].items():
        mark = "ok " if c["ok"] else "FIX"
        lines.append(f"  [{mark}] {name:12s} {value_text(c['value'])}")
        if c.get("fix"):
            lines.append(f"         -> {c['fix']}")
    return "\n".join(lines)
