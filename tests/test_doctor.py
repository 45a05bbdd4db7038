"""`doctor` in-process: each check's verdict and its fix, and the two ways it is shown. Fast; a GPU, a full disk
and a missing package are stand-ins. (The command itself: test_foundation.py, test_precision.py.)"""

import importlib.metadata
import shutil
from collections import namedtuple
from types import SimpleNamespace

import pytest
import torch

from easyphoto_app import demo_model, device, doctor, hub
from easyphoto_app.settings import load_settings


@pytest.fixture
def settings(tmp_path):
    s = load_settings(tmp_path / "data")
    s.app.model = "demo"
    return s


def test_every_check_has_a_verdict_and_the_report_is_ok_only_if_all_are(settings, monkeypatch):
    assert doctor._version("no-such-package-easyphoto") is None
    report = doctor.check(settings)
    assert report["data_dir"] == str(settings.data_dir)
    assert list(report["checks"]) == [
        "python",
        "torch",
        "diffusers",
        "peft",
        "transformers",
        "accelerate",
        "gradio",
        "insightface",
        "onnxruntime",
        "device",
        "precision",
        "disk",
        "data_dir",
        "base_model",
        "face_models",
        "licences",
    ]
    assert report["ok"] == all(c["ok"] for c in report["checks"].values())
    assert report["checks"]["torch"] == {"ok": True, "value": importlib.metadata.version("torch"), "fix": None}
    monkeypatch.setattr(doctor, "_version", lambda pkg: None if pkg == "peft" else "1.0")
    report = doctor.check(settings)
    assert report["checks"]["peft"] == {
        "ok": False,
        "value": None,
        "fix": "Run ./run.sh --install-only (or run.bat) to install it.",
    }
    assert report["checks"]["gradio"]["ok"] and not report["ok"]


def test_the_device_check_names_the_gpu_or_says_the_cpu_is_slow(monkeypatch):
    assert doctor._device_check("cpu") == {
        "ok": True,
        "value": {"device": "cpu", "torch_cuda": torch.version.cuda},
        "fix": "No GPU found: everything works on the CPU, but training real models is very slow.",
    }
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the suite also runs on GPU machines
    refused = doctor._device_check("cuda")  # asked for, but none here
    assert refused == {"ok": False, "value": "cuda", "fix": refused["fix"]} and "sees no CUDA GPU" in refused["fix"]
    monkeypatch.setattr(device, "pick_device", lambda pref: "cuda")
    asked = []
    monkeypatch.setattr(
        torch.cuda,
        "get_device_properties",
        lambda i: asked.append(i) or SimpleNamespace(name="NVIDIA RTX 4090", total_memory=int(23.94 * 2**30)),
    )
    gpu = doctor._device_check("auto")
    assert gpu["ok"] and gpu["fix"] is None and asked == [0]  # the GPU jobs run on
    assert (gpu["value"]["name"], gpu["value"]["vram_gb"]) == ("NVIDIA RTX 4090", 23.9)


def test_without_pytorch_the_device_check_says_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert doctor._device_check("auto") == {
        "ok": False,
        "value": None,
        "fix": "PyTorch is missing: run ./run.sh --install-only.",
    }


def test_the_precision_check_says_what_auto_picks_and_warns_of_half_precision_on_the_cpu(settings, monkeypatch):
    cpu = {"value": {"device": "cpu"}}
    settings.app.precision = "auto"
    assert doctor._precision_check(settings.app, cpu) == {
        "ok": True,
        "value": "fp32 (auto: on the CPU fp32 is the fastest and exact)",
        "fix": None,
    }
    settings.app.precision = "bf16"
    half = doctor._precision_check(settings.app, {"value": None})  # no device found: judged as the CPU
    assert half["ok"] and half["fix"].startswith("bf16 on the CPU runs the GPU's code path")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    refused = doctor._precision_check(settings.app, {"value": {"device": "cuda"}})
    assert refused["ok"] is False and refused["value"] == "bf16" and "no bf16 support" in refused["fix"]
    settings.app.precision = "fp16"
    assert doctor._precision_check(settings.app, {"value": {"device": "cuda"}})["fix"] is None
    settings.app.precision = "auto"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = doctor._precision_check(settings.app, {"value": {"device": "cuda"}})["value"]
    assert gpu.startswith("bf16 (auto") and "; RL: fp16 (auto for RL" in gpu


Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize("free_gb, ok", [(14.9, False), (15.0, True), (80.0, True)])
def test_the_disk_check_asks_for_15_gb(tmp_path, monkeypatch, free_gb, ok):
    probed = []
    monkeypatch.setattr(shutil, "disk_usage", lambda p: probed.append(p) or Usage(0, 0, int(free_gb * 2**30)))
    result = doctor._disk_check(tmp_path / "not" / "made")
    assert doctor._disk_check(tmp_path) == result  # an existing folder is asked about itself
    assert probed == [tmp_path, tmp_path] and result["ok"] is ok and result["value"] == f"{free_gb:.1f} GB free"
    assert (result["fix"] is None) is ok
    if not ok:
        assert (
            result["fix"]
            == "Free disk space: a model (SD 1.5 or SDXL), the identity adapter and training take about 15 GB."
        )


def test_the_data_folder_must_be_writable(tmp_path):
    ok = doctor._writable_check(tmp_path / "new" / "data")
    assert ok == {"ok": True, "value": str(tmp_path / "new" / "data"), "fix": None}
    assert doctor._writable_check(tmp_path / "new" / "data") == ok  # asked again: the folder is there already
    assert list((tmp_path / "new" / "data").iterdir()) == []  # its probe file is gone
    (tmp_path / "file").write_text("not a folder")
    bad = doctor._writable_check(tmp_path / "file" / "data")
    assert bad["ok"] is False and bad["value"] == str(tmp_path / "file" / "data")
    assert set(bad) == {"ok", "value", "fix"} and bad["fix"].startswith("The data folder is not writable (")
    assert bad["fix"].endswith("choose another with --data-dir or EASYPHOTO_HOME.")


def test_a_missing_face_model_fails_the_model_check_with_the_fix(settings, tmp_path, monkeypatch):
    monkeypatch.setattr(demo_model, "FACE_MODEL", tmp_path / "gone")
    check = doctor._model_check(settings)
    assert (
        check["ok"] is False
        and check["fix"] == f"The built-in face model is missing from {tmp_path / 'gone'}: reinstall EasyPhoto."
    )
    assert "missing" in check["value"]


def test_the_model_check_tells_demo_local_downloaded_and_missing_apart(settings, tmp_path, monkeypatch):
    demo = doctor._model_check(settings)
    assert demo == {
        "ok": True,
        "value": demo_model.demo_label(),
        "fix": "Choose a real model (e.g. the default SD 1.5) in Settings for real portraits.",
    }
    settings.app.model = str(tmp_path)
    assert doctor._model_check(settings) == {"ok": True, "value": f"{tmp_path} (local)", "fix": None}
    monkeypatch.setattr(hub, "cached_hub_model", lambda spec: spec == "org/cached")
    settings.app.model = "org/cached"
    assert doctor._model_check(settings) == {"ok": True, "value": "org/cached (downloaded)", "fix": None}
    settings.app.model = "org/absent"
    missing = doctor._model_check(settings)
    assert missing["ok"] is False and missing["value"] == "org/absent (not downloaded)"
    assert missing["fix"].startswith("It downloads (about 2-4 GB) on first use")


REPORT = {
    "data_dir": "/d",
    "checks": {
        "device": {"ok": True, "value": {"device": "cuda", "torch_cuda": None, "vram_gb": 24.0}, "fix": None},
        "disk": {"ok": False, "value": "3.0 GB free", "fix": "Free | some\nspace"},
        "torch": {"ok": True, "value": None, "fix": None},
    },
}


def test_values_read_as_words():
    assert doctor.value_text({"device": "cuda", "torch_cuda": None, "vram_gb": 24.0}) == "device: cuda, vram gb: 24.0"
    assert doctor.value_text(None) == "" and doctor.value_text(3.5) == "3.5"


def test_the_console_report_marks_what_to_fix_and_says_how():
    assert doctor.render(REPORT).splitlines() == [
        "EasyPhoto doctor - data dir: /d",
        "  [ok ] device       device: cuda, vram gb: 24.0",
        "  [FIX] disk         3.0 GB free",
        "         -> Free | some",
        "space",
        "  [ok ] torch        ",
    ]


def test_the_web_report_is_a_table_whose_cells_cannot_break_it():
    lines = doctor.render_markdown(REPORT).splitlines()
    assert lines[:4] == ["Data folder: `/d`", "", "| check | state | value | what to do |", "|---|---|---|---|"]
    assert lines[4] == "| device | ✔ ok | device: cuda, vram gb: 24.0 |  |"
    assert lines[5] == "| disk | ⚠️ fix | 3.0 GB free | Free \\| some space |"
    assert lines[6] == "| torch | ✔ ok |  |  |" and len(lines) == 7


@pytest.mark.parametrize("version, ok", [((3, 9, 18), False), ((3, 10, 0), True), ((3, 13, 1), True)])
def test_python_310_or_newer_is_asked_for(settings, monkeypatch, version, ok):
    import platform

    monkeypatch.setattr(doctor, "sys", SimpleNamespace(version_info=version))
    python = doctor.check(settings)["checks"]["python"]
    assert python == {
        "ok": ok,
        "value": platform.python_version(),
        "fix": None if ok else "Install Python 3.10 or newer.",
    }


def test_the_face_models_licence_is_said_once(tmp_path, monkeypatch):
    from easyphoto_app import doctor
    from easyphoto_app.faces.insight import INSIGHTFACE_LICENCE, InsightFaceBackend
    from easyphoto_app.settings import load_settings

    monkeypatch.setattr(InsightFaceBackend, "models_present", staticmethod(lambda folder: True))
    checks = doctor.check(load_settings(tmp_path))["checks"]
    assert "non-commercial" in checks["licences"]["value"]["face models"]
    fixes = [c["fix"] for c in checks.values() if c.get("fix") and INSIGHTFACE_LICENCE in c["fix"]]
    notes = [c["fix"] for c in checks.values() if c.get("fix") and "non-commercial" in c["fix"]]
    assert len(fixes) == 1 and len(notes) == 1, notes
