"""LoadedModel owns what EasyPhoto keeps with a loaded pipeline (its LoRA adapters, its derived pipelines), and the
pipeline cache drops all of it with the model."""

import os
from pathlib import Path

from easyphoto_app.generate import LoraChoice
from easyphoto_app.loaded_model import LoadedModel


class Derived:
    def __init__(self, name):
        self.name, self.bar = name, None

    def set_progress_bar_config(self, **kw):
        self.bar = kw


class PeftPipe:
    """The diffusers LoRA calls LoadedModel makes, recorded in order."""

    def __init__(self):
        self.calls = []
        self._progress_bar_config = {"disable": True}

    def __getattr__(self, name):
        if name in ("load_lora_weights", "delete_adapters", "set_adapters", "fuse_lora", "unfuse_lora"):
            return lambda *a, **k: self.calls.append((name, a, k))
        if name in ("enable_lora", "disable_lora"):
            return lambda: self.calls.append((name, (), {}))
        raise AttributeError(name)


def test_a_derived_pipeline_is_made_once_per_key_and_again_when_its_key_changes():
    loaded, made = LoadedModel(PeftPipe(), None), []

    def make(name):
        return lambda: made.append(name) or Derived(name)

    inpaint = loaded.derived(("inpaint",), make("inpaint"))
    control_a = loaded.derived(("control", Path("a")), make("a"))
    assert loaded.derived(("inpaint",), make("again")) is inpaint
    assert loaded.derived(("control", Path("a")), make("again")) is control_a
    control_b = loaded.derived(("control", Path("b")), make("b"))  # another ControlNet replaces the first
    assert control_b is not control_a and loaded.derived(("inpaint",), make("again")) is inpaint
    assert made == ["inpaint", "a", "b"] and control_b.bar == {"disable": True}  # shows progress as the pipe does
    assert loaded.derived(("control", Path("a")), make("a")) is not control_a and made[-1] == "a"


def test_loras_are_loaded_once_fused_as_a_set_and_fused_again_only_when_the_set_changes(tmp_path):
    face, rl = tmp_path / "anna.safetensors", tmp_path / "ddpo_anna.safetensors"
    face.write_bytes(b"1")
    rl.write_bytes(b"2")
    pipe = PeftPipe()
    loaded = LoadedModel(pipe, None)
    both = [LoraChoice("anna", face, 0.8), LoraChoice("ddpo_anna", rl, 0.5)]
    loaded.use_loras(both)
    assert [c[0] for c in pipe.calls] == ["load_lora_weights", "load_lora_weights", "enable_lora", "set_adapters"] + [
        "fuse_lora"
    ]
    assert loaded.adapters == loaded.fused == ("ep_anna", "ep_ddpo_anna")
    pipe.calls.clear()
    loaded.use_loras(list(both))  # the same set and weights: nothing to do
    assert pipe.calls == []
    loaded.use_loras([both[0], LoraChoice("ddpo_anna", rl, 0.2)])  # a weight: unfused, re-weighted, no reload
    assert [c[0] for c in pipe.calls] == ["unfuse_lora", "enable_lora", "set_adapters", "fuse_lora"]
    assert pipe.calls[2][2] == {"adapter_weights": [0.8, 0.2]}
    pipe.calls.clear()
    rl.write_bytes(b"a new RL run")  # the file changed on disk: that adapter alone is loaded again
    os.utime(rl, ns=(rl.stat().st_atime_ns, rl.stat().st_mtime_ns + 10**9))
    loaded.use_loras(both)
    names = [c[0] for c in pipe.calls]
    assert names[:3] == ["unfuse_lora", "delete_adapters", "load_lora_weights"] and pipe.calls[1][1] == (
        "ep_ddpo_anna",
    )
    pipe.calls.clear()
    loaded.use_loras([])  # none: unfused and switched off, still loaded for the next time
    assert [c[0] for c in pipe.calls] == ["unfuse_lora", "disable_lora"]
    assert loaded.fused == () and loaded.adapters == ("ep_anna", "ep_ddpo_anna")
    assert not [k for k in vars(pipe) if k.startswith("_ep")]  # nothing of ours kept on the pipeline


def test_the_cache_keeps_a_loaded_model_and_its_derived_pipelines_and_drops_them_with_the_model(data_dir):
    import torch

    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.portrait import inpaint_pipeline
    from easyphoto_app.settings import load_settings

    s = load_settings(data_dir)
    cache = PipelineCache()
    first = cache.get(s)
    painter = inpaint_pipeline(first)
    assert cache.get(s) is first and inpaint_pipeline(cache.get(s)) is painter and cache.model is first.model
    s.app.precision = "bf16"  # another pipeline: a new LoadedModel, with nothing of the old one's
    second = cache.get(s)
    assert second is not first and second.pipe.unet.dtype == torch.bfloat16
    repainter = inpaint_pipeline(second)
    assert repainter is not painter and repainter.unet is second.pipe.unet
    assert not [k for p in (first.pipe, second.pipe, painter) for k in vars(p) if k.startswith("_ep")]
    cache.clear()
    assert cache.model is None and cache.get(s) is not second


def test_the_ui_hands_its_work_the_cached_loaded_model_one_generation_at_a_time():
    import threading
    from types import SimpleNamespace

    import pytest

    from easyphoto_app.errors import BusyError
    from easyphoto_app.ui.common import with_pipeline

    loaded = LoadedModel(PeftPipe(), SimpleNamespace(is_demo=False))
    ctx = SimpleNamespace(
        settings="settings",
        pipelines=SimpleNamespace(get=lambda settings: settings == "settings" and loaded),
        generate_lock=threading.Lock(),
        cancel_generate=threading.Event(),
    )
    seen = []

    def work(given):
        seen.append(given)
        with pytest.raises(BusyError, match="Another generation is running"):
            with_pipeline(ctx, lambda *a, **k: None, work)
        return "made"

    assert with_pipeline(ctx, lambda *a, **k: None, work) == ("made", loaded.model) and seen == [loaded]
    assert not ctx.generate_lock.locked()
