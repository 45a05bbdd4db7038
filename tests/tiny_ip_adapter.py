"""A tiny IP-Adapter plus-face, random weights, in the real files' layout: h94/IP-Adapter's folders
(`models/image_encoder`, `models/ip-adapter-plus-face_sd15.safetensors`, `sdxl_models/...`) and the keys of the
original Resampler (`image_proj.latents`, `image_proj.layers.N.0.to_kv`, ...) and of each cross-attention processor
(`ip_adapter.1.to_k_ip.weight`, `ip_adapter.3...`, numbered as the trained files are: every attention layer counts,
the cross-attention ones are the odd numbers). diffusers' own `load_ip_adapter` converts them, as it does the real ones.
"""

from __future__ import annotations

from pathlib import Path

from easyphoto_app.identity_adapter import FILES

ENCODER_WIDTH = 32  # the image encoder's hidden size (ViT-H's is 1280)
RESAMPLER_WIDTH = 32  # the Resampler's own width (plus-face's is 768 for SD 1.5, 1280 for SDXL)
QUERIES = 16  # image tokens per face, as plus-face has
DEPTH = 4  # Resampler blocks: diffusers builds 4 whatever the file holds, as plus-face has
HEAD = 64  # diffusers reads the heads as to_q's rows / 64


def build_tiny_encoder(folder: Path) -> None:
    """A CLIPVisionModelWithProjection of 32 px images in 8 px patches (17 tokens), saved as a model folder."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(10)
    config = CLIPVisionConfig(
        hidden_size=ENCODER_WIDTH,
        intermediate_size=64,
        projection_dim=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    CLIPVisionModelWithProjection(config).save_pretrained(folder, safe_serialization=True)


def resampler_state(output_dim: int, gen) -> dict:
    """The original IP-Adapter Resampler's keys (tencent-ailab/IP-Adapter ip_adapter/resampler.py)."""
    import torch

    def w(*shape, std=0.3):
        return torch.randn(*shape, generator=gen) * std

    d, inner, ff = RESAMPLER_WIDTH, HEAD, RESAMPLER_WIDTH * 4
    state = {
        "latents": w(1, QUERIES, d, std=d**-0.5),
        "proj_in.weight": w(d, ENCODER_WIDTH),
        "proj_in.bias": w(d, std=0.02),
        "proj_out.weight": w(output_dim, d),
        "proj_out.bias": w(output_dim, std=0.02),
        "norm_out.weight": torch.ones(output_dim),
        "norm_out.bias": torch.zeros(output_dim),
    }
    for i in range(DEPTH):
        state |= {
            f"layers.{i}.0.norm1.weight": torch.ones(d),
            f"layers.{i}.0.norm1.bias": torch.zeros(d),
            f"layers.{i}.0.norm2.weight": torch.ones(d),
            f"layers.{i}.0.norm2.bias": torch.zeros(d),
            f"layers.{i}.0.to_q.weight": w(inner, d),
            f"layers.{i}.0.to_kv.weight": w(2 * inner, d),
            f"layers.{i}.0.to_out.weight": w(d, inner),
            f"layers.{i}.1.0.weight": torch.ones(d),
            f"layers.{i}.1.0.bias": torch.zeros(d),
            f"layers.{i}.1.1.weight": w(ff, d),
            f"layers.{i}.1.3.weight": w(d, ff),
        }
    return state


def processor_state(unet, gen) -> dict:
    """to_k_ip / to_v_ip of each cross-attention layer, numbered over all attention layers from 0 as the trained
    files are (so the cross-attention ones are 1, 3, 5, ...), widths as diffusers derives them from the UNet."""
    import torch

    cfg, state = unet.config, {}
    for n, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            continue
        block = int(name.split(".")[1]) if not name.startswith("mid_block") else -1
        channels = list(cfg.block_out_channels)
        width = channels[-1] if block < 0 else (channels[::-1] if name.startswith("up") else channels)[block]
        for key in ("to_k_ip", "to_v_ip"):
            state[f"{n}.{key}.weight"] = torch.randn(width, cfg.cross_attention_dim, generator=gen) * 0.5
    return state


def build_tiny_ip_adapter(repo: Path, family: str, model_dir: Path) -> Path:
    """Write the family's adapter file (and the shared image encoder, once) into repo, for the UNet of model_dir."""
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    files = FILES[family]
    repo = Path(repo)
    encoder = repo / files.image_encoder
    if not (encoder / "model.safetensors").exists():
        build_tiny_encoder(encoder)
    unet = UNet2DConditionModel.from_pretrained(Path(model_dir) / "unet")
    gen = torch.Generator().manual_seed(11)
    state = {f"image_proj.{k}": v for k, v in resampler_state(unet.config.cross_attention_dim, gen).items()}
    state |= {f"ip_adapter.{k}": v for k, v in processor_state(unet, gen).items()}
    target = repo / files.subfolder / files.weight_name
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, target)
    return repo
