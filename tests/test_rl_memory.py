"""The RL memory estimate (ddpo/memory.py) on a tiny UNet and VAE at 64 px: exact byte counts where the maths
gives them, and the pre-flight warning's advice. Fast: everything runs on PyTorch's meta device."""

import dataclasses

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from easyphoto_app import memory_trace
from easyphoto_app.ddpo import memory
from easyphoto_app.ddpo.memory import GB, estimate_rl_memory, lower_settings, preflight
from easyphoto_app.hub import human_size
from easyphoto_app.settings import RLConfig

UNET = dict(
    sample_size=8,
    block_out_channels=(32,),
    layers_per_block=1,
    cross_attention_dim=32,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",),
    up_block_types=("CrossAttnUpBlock2D",),
    norm_num_groups=32,
)
VAE = dict(
    block_out_channels=(16,),
    down_block_types=("DownEncoderBlock2D",),
    up_block_types=("UpDecoderBlock2D",),
    latent_channels=4,
    norm_num_groups=16,
    layers_per_block=1,
)
CFG = dataclasses.replace(
    RLConfig(), num_inference_steps=4, samples_per_epoch=8, sample_batch_size=4, timestep_batch=4, rank=4
)
RES = 64
_estimates = {}


def estimate(unet, vae, cfg, resolution, dtype=torch.float16, **kw):
    """estimate_rl_memory, each case traced once (about a second each)."""
    key = repr((unet, vae, cfg, resolution, dtype, sorted(kw.items())))
    if key not in _estimates:
        _estimates[key] = estimate_rl_memory(unet, vae, cfg, resolution, dtype, **kw)
    return _estimates[key]


def work(cfg=CFG, **kw) -> int:
    return round(estimate(UNET, VAE, cfg, RES, **kw).work_gb * GB)


def test_live_bytes_counts_each_storage_once_until_it_is_freed():
    with memory_trace.LiveBytes() as live:
        a = torch.empty(1000)  # 4000 bytes
        b = torch.empty(500, dtype=torch.float16)  # 1000
        view = a[10:]  # the same storage
        del a
        assert live.live == 5000  # the view keeps a's storage alive
        del view
        c = torch.empty(250, dtype=torch.float64)  # 2000
        assert (live.live, live.peak) == (3000, 5000)
    del b, c


def test_views_of_weights_made_before_the_trace_are_not_counted():
    """F.linear multiplies by a transposed view of the weight: the weight's memory, not new memory."""
    weight, x = torch.empty(1000, 1000), torch.empty(10, 1000)
    with memory_trace.LiveBytes() as live:
        y = torch.nn.functional.linear(x, weight)
        y.add_(1)  # in place: no new memory either
    assert live.peak == y.numel() * 4


def test_attention_is_counted_as_the_fused_kernels_hold_it():
    q, k, v = (torch.empty(1, 1, 4096, 8, device="meta", requires_grad=True) for _ in range(3))
    with memory_trace.LiveBytes() as live:
        out = memory_trace.fused_sdpa(q, k, v)
        out.sum().backward()
    assert out.shape == (1, 1, 4096, 8) and q.grad.shape == q.shape and v.grad.shape == v.shape
    assert live.peak < 4096 * 4096 * 4 / 16  # no 4096 x 4096 score matrix (64 MiB in float32)


def test_the_weights_are_the_unet_and_the_vae_decoder_in_the_runs_dtype():
    half, full = estimate(UNET, VAE, CFG, RES), estimate(UNET, VAE, CFG, RES, dtype=torch.float32)
    unet, vae = UNet2DConditionModel(**UNET), AutoencoderKL(**VAE)
    kept = [*unet.parameters(), *vae.decoder.parameters(), *vae.post_quant_conv.parameters()]  # no VAE encoder
    base = sum(p.numel() for p in kept)
    assert round((full.weights_gb - half.weights_gb) * GB) == 2 * base  # 4 bytes a weight instead of 2
    lora = round(half.weights_gb * GB) - 2 * base  # the RL LoRA in float32: rank x (in + out) for each projection
    assert lora == 4 * CFG.rank * sum(
        m.in_features + m.out_features
        for name, m in unet.named_modules()
        if name.endswith(("to_q", "to_k", "to_v", "to_out.0"))
    )
    assert half.total_gb == half.weights_gb + half.work_gb
    unet, _, lora = memory._meta_models(UNET, VAE, CFG.rank, torch.float16)
    assert [p for p in unet.parameters() if p.requires_grad] == lora  # frozen base: no gradients counted for it


def test_the_trajectories_are_kept_in_float32_for_the_whole_epoch():
    """At the latent size the model's autoencoder gives (this one has one block: no reduction; SD 1.5's gives 1/8,
    the face model's 1/4)."""
    one_more_step = work(dataclasses.replace(CFG, num_inference_steps=CFG.num_inference_steps + 1)) - work()
    assert one_more_step == CFG.samples_per_epoch * 4 * RES**2 * 4  # samples x C x H x W x float32
    vae4 = {
        **VAE,
        "block_out_channels": (16, 16, 16),
        "down_block_types": ("DownEncoderBlock2D",) * 3,
        "up_block_types": ("UpDecoderBlock2D",) * 3,
    }
    step = GB * (
        estimate_rl_memory(
            UNET, vae4, dataclasses.replace(CFG, num_inference_steps=CFG.num_inference_steps + 1), RES
        ).work_gb
        - estimate_rl_memory(UNET, vae4, CFG, RES).work_gb
    )
    assert round(step) == CFG.samples_per_epoch * 4 * (RES // 4) ** 2 * 4


@pytest.mark.parametrize("setting", ["sample_batch_size", "timestep_batch", "train_batch_size", "samples_per_epoch"])
def test_each_batch_setting_moves_the_estimate(setting):
    base = dataclasses.replace(CFG, timestep_batch=1)  # (with 4 the training step is the peak, not the sampling)
    assert work(dataclasses.replace(base, **{setting: getattr(base, setting) * 2})) > work(base)


def test_the_cuda_savings_lower_the_estimate():
    assert work(cuda_savings=False) > work()


def test_lower_settings_are_tried_from_the_cheapest_loss():
    assert lower_settings(CFG) == [("timestep_batch", 1), ("sample_batch_size", 1), ("samples_per_epoch", 4)]
    lowest = dataclasses.replace(CFG, timestep_batch=1, sample_batch_size=1, samples_per_epoch=4)
    assert lower_settings(lowest) == []
    assert lower_settings(dataclasses.replace(lowest, samples_per_epoch=5)) == [("samples_per_epoch", 4)]
    assert lower_settings(dataclasses.replace(lowest, sample_batch_size=2)) == [("sample_batch_size", 1)]


def test_the_preflight_says_what_to_lower_and_by_how_much(monkeypatch):
    monkeypatch.setattr(memory, "estimate_rl_memory", estimate)
    need = work()
    assert preflight(UNET, VAE, CFG, RES, free_bytes=need) is None
    head = f"warning: these RL settings need about {human_size(need)} of GPU memory and {human_size(need - 1)} is free"
    first = work(dataclasses.replace(CFG, timestep_batch=1))
    assert preflight(UNET, VAE, CFG, RES, free_bytes=need - 1) == (
        f"{head}. Try timestep batch 1 (--timestep-batch 1): about {human_size(first)}. Or lower the resolution."
    )
    both = work(dataclasses.replace(CFG, timestep_batch=1, sample_batch_size=1))
    assert both < first
    assert preflight(UNET, VAE, CFG, RES, free_bytes=both) == (
        f"warning: these RL settings need about {human_size(need)} of GPU memory and {human_size(both)} is free. "
        "Try timestep batch 1 (--timestep-batch 1), sample batch size 1 (--sample-batch-size 1): "
        f"about {human_size(both)}. "
        "Or lower the resolution."
    )
    smallest = work(dataclasses.replace(CFG, timestep_batch=1, sample_batch_size=1, samples_per_epoch=4))
    assert preflight(UNET, VAE, CFG, RES, free_bytes=1024) == (
        f"warning: these RL settings need about {human_size(need)} of GPU memory and {human_size(1024)} is free; "
        f"even the smallest settings need about {human_size(smallest)}: lower the resolution or use a larger GPU."
    )


def test_an_autoencoder_that_overflows_in_fp16_is_counted_in_fp32():
    """SDXL's (force_upcast) decodes RL's samples in fp32 when the run is in fp16: 2 more bytes a weight."""
    upcast = estimate(UNET, {**VAE, "force_upcast": True}, CFG, RES)
    full = AutoencoderKL(**VAE)
    vae = sum(p.numel() for m in (full.decoder, full.post_quant_conv) for p in m.parameters())  # the decoder only
    assert round((upcast.weights_gb - estimate(UNET, VAE, CFG, RES).weights_gb) * GB) == 2 * vae
    bf16 = estimate(UNET, {**VAE, "force_upcast": True}, CFG, RES, dtype=torch.bfloat16)
    assert bf16.weights_gb == estimate(UNET, VAE, CFG, RES, dtype=torch.bfloat16).weights_gb
