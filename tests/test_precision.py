"""--precision: one decision for every job, and the half-precision paths as a GPU runs them."""

import pytest
import torch
from conftest import run_cli


def test_auto_picks_bf16_on_cuda_cards_that_have_it_else_fp16_and_fp32_on_the_cpu(monkeypatch):
    from easyphoto_app.errors import UserError
    from easyphoto_app.precision import pick_precision

    assert pick_precision("auto", "cpu").name == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_precision("auto", "cuda").name == "bf16" and pick_precision("auto", "cuda:1").dtype == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_precision("auto", "cuda").name == "fp16"
    with pytest.raises(UserError, match="no bf16"):
        pick_precision("bf16", "cuda")
    assert pick_precision("auto", "mps").name == "fp16"
    half = pick_precision("fp16", "cpu")
    assert half.dtype == torch.float16 and half.reason == "asked for" and half.scaler().is_enabled()
    assert (
        not pick_precision("bf16", "cpu").scaler().is_enabled()
        and not pick_precision("fp32", "cpu").scaler().is_enabled()
    )
    with pytest.raises(UserError, match="Unknown precision"):
        pick_precision("fp8", "cpu")


def test_fp16_autocast_runs_matmuls_in_half_and_the_scaler_rescues_underflowing_gradients():
    """What fp16 training needs: a gradient of 1e-8 through an fp16 activation is 0 without scaling."""
    from easyphoto_app.precision import pick_precision

    p = pick_precision("fp16", "cpu")
    w = torch.nn.Parameter(torch.ones(4, 4))
    with p.autocast():
        y = torch.ones(1, 4) @ w
    assert y.dtype == torch.float16
    for scaler, expect_zero in ((torch.amp.GradScaler("cpu", enabled=False), True), (p.scaler(), False)):
        w.grad = None
        x = torch.ones(1, 4, dtype=torch.float16, requires_grad=True)
        with p.autocast():
            out = (x @ w.half()).sum()
        scaler.scale(out.float() * 1e-8).backward()
        grad = x.grad.float() / scaler.get_scale() if scaler.is_enabled() else x.grad.float()
        assert bool((grad == 0).all()) == expect_zero


def test_pipeline_cache_loads_in_the_chosen_precision(data_dir):
    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.settings import load_settings
    from easyphoto_app.ui.common import job_global_args

    s = load_settings(data_dir)
    cache = PipelineCache()
    assert cache.get(s).pipe.unet.dtype == torch.float32
    s.app.precision = "bf16"
    assert cache.get(s).pipe.unet.dtype == torch.bfloat16  # a new precision reloads
    args = job_global_args(s)
    assert args[args.index("--precision") + 1] == "bf16"  # jobs started from the UI run with it too


@pytest.mark.slow
def test_generate_and_doctor_honour_precision(data_dir):
    r = run_cli(data_dir, "--precision", "bf16", "generate", "--num", "1", "--num-inference-steps", "2", "--json")
    assert r.returncode == 0, r.stderr
    r = run_cli(data_dir, "--precision", "fp16", "doctor")
    assert r.returncode == 0 and "fp16 (asked for)" in r.stdout and "slower than fp32" in r.stdout
    r = run_cli(data_dir, "doctor")
    assert "fp32 (auto: on the CPU" in r.stdout


def test_a_choice_is_read_in_any_case_and_none_means_auto(monkeypatch):
    from easyphoto_app.precision import FP32, pick_precision

    assert pick_precision(None, "cpu").reason == "auto: on the CPU fp32 is the fastest and exact"
    assert pick_precision("BF16", "cpu").name == "bf16" and pick_precision("Fp32", "cpu").reason == "asked for"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_precision("fp16", "cuda:0").name == "fp16"  # a card without bf16 may still ask for fp16
    assert (FP32.name, FP32.is_half, FP32.dtype) == ("fp32", False, torch.float32)
    assert pick_precision("bf16", "cpu").is_half and pick_precision("fp16", "cpu").is_half


def test_autocast_is_a_no_op_in_fp32_and_computes_in_the_half_type_otherwise():
    from easyphoto_app.precision import pick_precision

    a, b = torch.ones(2, 2), torch.ones(2, 2)
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        with pick_precision(name, "cpu:0").autocast():
            assert (a @ b).dtype == dtype


def test_rl_auto_is_fp16_on_a_gpu_with_bf16_and_fp32_on_the_cpu(monkeypatch, home_copy):
    """RL's auto is fp16 on a GPU with bf16 (the other jobs' auto there): bf16's rounding moves most PPO ratios past
    DDPO's clip range. A precision asked for is kept. Red with RL taking the jobs' pick."""
    from easyphoto_app.ddpo.loop import RLRun
    from easyphoto_app.jobs import Reporter
    from easyphoto_app.precision import Precision, pick_rl_precision
    from easyphoto_app.settings import load_settings
    from easyphoto_app.workspace import Workspace

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_rl_precision("auto", "cuda").name == "fp16" and pick_rl_precision("auto", "mps").name == "fp16"
    assert pick_rl_precision("auto", "cpu").name == "fp32"
    assert pick_rl_precision("bf16", "cuda").name == "bf16" and pick_rl_precision("fp16", "cpu").reason == "asked for"
    s = load_settings(home_copy)
    s.app.precision = "auto"
    run = RLRun(s, Workspace(home_copy), "astro", Reporter(), reward_fn=lambda ims: ([0.0] * len(ims), {}))
    monkeypatch.setattr(
        "easyphoto_app.precision.pick_precision", lambda choice, device: Precision("bf16", device, "a GPU's")
    )
    run.setup()
    assert run.precision.name == "fp32" and run.pipe.unet.dtype == torch.float32
