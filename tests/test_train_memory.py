"""The face LoRA's memory estimate (train_memory.py) on a tiny UNet, VAE and text encoders: exact byte counts where
the maths gives them, the two moments it compares, and the warning's advice. Fast: everything runs on the meta
device, except the last test's tiny pipeline."""

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from test_rl_memory import UNET, VAE
from transformers import CLIPTextConfig, CLIPTextModel

from easyphoto_app import train_memory
from easyphoto_app.hub import human_size
from easyphoto_app.lora_adapters import TE_TARGETS, UNET_TARGETS
from easyphoto_app.memory_trace import GB
from easyphoto_app.settings import TrainConfig

CFG = TrainConfig(rank=4, lora_alpha=4.0, train_batch_size=2, train_text_encoder=True)
RES = 64


def text_encoder(device="meta"):
    with torch.device(device):
        return CLIPTextModel(
            CLIPTextConfig(
                hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000
            )
        )


def estimate(cfg=CFG, vae=VAE, dtype=torch.bfloat16, resolution=RES, photos=4):
    return train_memory.estimate_train_memory(UNET, vae, [text_encoder()], cfg, resolution, dtype, photos)


def bytes_of(e) -> tuple[int, int]:
    return round(e.weights_gb * GB), round(e.work_gb * GB)


def params(model, names) -> int:
    return sum(p.numel() for n, m in model.named_modules() if n.endswith(names) for p in [m.weight])


def lora_size(model, names, rank) -> int:
    return sum(rank * (m.in_features + m.out_features) for n, m in model.named_modules() if n.endswith(names))


def test_training_the_text_encoder_adds_its_weights_and_its_loras_state():
    te = text_encoder()
    without = bytes_of(estimate(dataclasses.replace(CFG, train_text_encoder=False)))
    with_te = bytes_of(estimate())
    lora = lora_size(te, tuple(TE_TARGETS), CFG.rank) * 4  # float32
    te_bytes = sum(p.numel() for p in te.parameters()) * 2  # bf16
    assert with_te[0] - without[0] == te_bytes + lora  # its weights stay on the GPU, and its LoRA with them
    assert with_te[1] - without[1] == 3 * lora  # the LoRA's gradient and AdamW's two moments


def test_the_training_step_holds_the_unet_its_lora_and_adamws_moments():
    e = estimate(dataclasses.replace(CFG, train_text_encoder=False))
    unet = UNet2DConditionModel(**UNET)
    lora = lora_size(unet, tuple(UNET_TARGETS), CFG.rank)
    assert bytes_of(e)[0] == sum(p.numel() for p in unet.parameters()) * 2 + lora * 4
    wider = estimate(dataclasses.replace(CFG, train_text_encoder=False, rank=2 * CFG.rank))
    # twice the rank: the LoRA's weights, gradients and two moments grow by the same 4 bytes a parameter each
    assert bytes_of(wider)[0] - bytes_of(e)[0] == lora * 4
    assert bytes_of(wider)[1] - bytes_of(e)[1] >= lora * 4 * 3


def test_a_larger_batch_or_resolution_needs_more():
    cfg = dataclasses.replace(CFG, train_text_encoder=False)
    assert estimate(dataclasses.replace(cfg, train_batch_size=4)).work_gb > estimate(cfg).work_gb
    assert estimate(cfg, resolution=2 * RES).work_gb > estimate(cfg).work_gb


def test_encoding_with_every_model_on_the_gpu_can_be_the_peak():
    """A large autoencoder and a small UNet: the moment the photos are encoded (all weights on the GPU, the autoencoder
    in fp32 where it overflows in fp16) is the larger, and it is the estimate."""
    big = {
        **VAE,
        "block_out_channels": (64,) * 4,
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "norm_num_groups": 32,
    }  # 256 px photos, 32 px latents
    vae_params = sum(p.numel() for p in AutoencoderKL(**big).parameters())
    cfg = dataclasses.replace(CFG, train_text_encoder=False)
    e = estimate(cfg, vae=big, resolution=256)
    unet = UNet2DConditionModel(**UNET)
    te = sum(p.numel() for p in text_encoder().parameters())
    lora = lora_size(unet, tuple(UNET_TARGETS), CFG.rank)
    assert bytes_of(e)[0] == (sum(p.numel() for p in unet.parameters()) + vae_params + te) * 2 + lora * 4
    upcast = estimate(cfg, vae={**big, "force_upcast": True}, dtype=torch.float16, resolution=256)
    assert bytes_of(upcast)[0] - bytes_of(e)[0] == 2 * vae_params
    assert upcast.work_gb > e.work_gb  # its activations in fp32 too


def test_lower_settings_drop_the_batch_then_the_text_encoder():
    assert train_memory.lower_settings(CFG) == [("train_batch_size", 1), ("train_text_encoder", False)]
    assert train_memory.lower_settings(TrainConfig(train_batch_size=1, train_text_encoder=False)) == []


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from diffusers import StableDiffusionPipeline
    from tiny_model import build_random_model

    return StableDiffusionPipeline.from_pretrained(build_random_model(tmp_path_factory.mktemp("tiny") / "m"))


@pytest.mark.slow
def test_the_job_shows_the_estimate_and_warns_with_what_to_lower(tiny_pipe):
    """A batch of 16 makes the training step the peak (on this tiny model encoding the photos is, otherwise)."""
    pipe, dtype, cfg = tiny_pipe, torch.float32, dataclasses.replace(CFG, train_batch_size=16)
    loaded = sum(p.numel() * 4 for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())

    def total(c) -> int:
        e = train_memory.estimate_train_memory(
            dict(pipe.unet.config), dict(pipe.vae.config), [pipe.text_encoder], c, RES, dtype, 4
        )
        return round(e.total_gb * GB)

    need = total(cfg) - loaded
    line, warning = train_memory.preflight(pipe, cfg, RES, need, dtype, 4)
    weights = train_memory.estimate_train_memory(
        dict(pipe.unet.config), dict(pipe.vae.config), [pipe.text_encoder], cfg, RES, dtype, 4
    ).weights_gb
    assert line == (
        f"GPU memory estimate for this training: about {human_size(total(cfg))} at its peak "
        f"({human_size(round(weights * GB))} of weights), {human_size(need)} free after loading"
    )
    assert warning is None
    _, warning = train_memory.preflight(pipe, cfg, RES, 1024, dtype, 4)
    assert warning.startswith(
        f"warning: these training settings need about {human_size(need)} of GPU memory and "
        f"{human_size(1024)} is free; even the smallest settings need about"
    )
    one = total(dataclasses.replace(cfg, train_batch_size=1)) - loaded
    assert one < need
    _, warning = train_memory.preflight(pipe, cfg, RES, one, dtype, 4)
    assert warning.endswith(
        f"Try train batch size 1 (--train-batch-size 1): about {human_size(one)}. Or lower the resolution."
    ), warning


def test_the_training_log_carries_the_estimate_and_the_warning(tiny_pipe, monkeypatch):
    from easyphoto_app.jobs import Reporter

    events = []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda: (1024, 2**30))  # what the job reads on CUDA
    train_memory.log_estimate(Reporter(listeners=[events.append]), tiny_pipe, CFG, RES, torch.float32, 4)
    messages = [e["message"] for e in events if e["type"] == "log"]
    assert len(messages) == 2
    assert messages[0].startswith("GPU memory estimate for this training: about ")
    assert messages[1].startswith("warning: these training settings need about ")

    def broken(*a, **k):
        raise RuntimeError("no such config")

    monkeypatch.setattr(train_memory, "estimate_train_memory", broken)
    events.clear()
    train_memory.log_estimate(Reporter(listeners=[events.append]), tiny_pipe, CFG, RES, torch.float32, 4)
    assert [e["message"] for e in events] == ["(no memory estimate: RuntimeError: no such config)"]


def test_the_preflight_traces_each_setting_once(tiny_pipe, monkeypatch):
    """The line and the warning share the first estimate (SDXL's takes seconds)."""
    calls = []
    real = train_memory.estimate_train_memory
    monkeypatch.setattr(train_memory, "estimate_train_memory", lambda *a: calls.append(a[3]) or real(*a))
    train_memory.preflight(tiny_pipe, CFG, RES, 1024, torch.float32, 4)  # too little: every lower setting is tried
    assert len(calls) == len({repr(c) for c in calls}) == 1 + len(train_memory.lower_settings(CFG))
