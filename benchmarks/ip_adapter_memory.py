"""GPU memory estimates for generation with the identity adapter (IP-Adapter plus-face), SD 1.5 at 512 px and SDXL at
1024 px, fp16, built on PyTorch's meta device from the shipped configs (assets/sd15, assets/sdxl) and the real
adapters' shapes (h94/IP-Adapter: the ViT-H/14 image encoder; a Resampler of 4 blocks and 16 image tokens; to_k_ip /
to_v_ip on every cross-attention layer). Estimates, not measurements: no GPU is used (easyphoto_app/memory_trace.py
says what is and is not counted; the CUDA context, roughly 0.3-0.5 GB, is not). Prints JSON.

    .venv/bin/python benchmarks/ip_adapter_memory.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from easyphoto_app.families import sd15, sdxl  # noqa: E402
from easyphoto_app.identity_adapter import MAX_FACES  # noqa: E402
from easyphoto_app.memory_trace import GB, added_conditions, cast, nbytes, traced  # noqa: E402

DTYPE = torch.float16
META = {"device": "meta", "dtype": DTYPE}
# h94/IP-Adapter models/image_encoder/config.json (OpenCLIP ViT-H/14 as transformers' CLIPVisionModelWithProjection)
VIT_H = dict(
    hidden_size=1280,
    intermediate_size=5120,
    num_hidden_layers=32,
    num_attention_heads=16,
    image_size=224,
    patch_size=14,
    projection_dim=1024,
    hidden_act="gelu",
)
# The Resampler of each plus-face file: its width and heads (IP-Adapter's own code: the UNet's cross-attention width
# and 12 heads for SD 1.5, 1280 and 20 for SDXL)
RESAMPLER = {"sd15": (768, 12), "sdxl": (1280, 20)}
SIZES = {"sd15": 512, "sdxl": 1024}


def unet_of(family):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(family.CONFIG / "unet"))
    cast(unet, DTYPE)
    return unet


def add_adapter(unet, family) -> int:
    """The adapter's modules in unet, as load_ip_adapter puts them; returns their bytes."""
    from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterPlusImageProjection, MultiIPAdapterImageProjection

    cross, channels = unet.config.cross_attention_dim, list(unet.config.block_out_channels)
    width, heads = RESAMPLER[family.NAME]
    procs, added = {}, []
    with torch.device("meta"):
        for name in unet.attn_processors:
            if name.endswith("attn1.processor"):
                procs[name] = AttnProcessor2_0()
                continue
            block = -1 if name.startswith("mid") else int(name.split(".")[1])
            hidden = channels[-1] if block < 0 else (channels[::-1] if name.startswith("up") else channels)[block]
            procs[name] = IPAdapterAttnProcessor2_0(hidden, cross, num_tokens=(16,), scale=1.0)
            added.append(procs[name])
        proj = IPAdapterPlusImageProjection(
            embed_dims=VIT_H["hidden_size"], output_dims=cross, hidden_dims=width, heads=heads, num_queries=16
        )
    for module in (*added, proj):
        cast(module, DTYPE)
    unet.set_attn_processor(procs)
    unet.encoder_hid_proj = MultiIPAdapterImageProjection([proj])
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    return sum(nbytes(m.parameters()) for m in (*added, proj))


def unet_step(unet, size: int, faces: int | None) -> int:
    """The work of one denoising step with classifier-free guidance (a batch of 2), with `faces` image embeddings."""
    latent = size // 8
    kwargs = added_conditions(unet.config, 2, META)
    if faces:
        tokens = (VIT_H["image_size"] // VIT_H["patch_size"]) ** 2 + 1
        embeds = [torch.empty(2, faces, tokens, VIT_H["hidden_size"], **META)]
        kwargs.setdefault("added_cond_kwargs", {})["image_embeds"] = embeds
    hidden = torch.empty(2, 77, unet.config.cross_attention_dim, **META)
    with traced() as live, torch.no_grad():
        unet(torch.empty(2, 4, latent, latent, **META), torch.tensor(500), hidden, **kwargs)
    return live.peak


def encoder_cost(faces: int) -> tuple[int, int]:
    """(the image encoder's bytes, the work of encoding the faces and the black image of the unconditional half)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_H))
    cast(encoder, DTYPE)
    with traced() as live, torch.no_grad():
        encoder(torch.empty(faces, 3, 224, 224, **META), output_hidden_states=True)
    return nbytes(encoder.parameters()), live.peak


def estimate(family) -> dict:
    size = SIZES[family.NAME]
    unet = unet_of(family)
    bare = unet_step(unet, size, None)
    adapter = add_adapter(unet, family)
    conditioned = unet_step(unet, size, MAX_FACES)
    encoder, encoding = encoder_cost(MAX_FACES)
    return {
        "family": family.LABEL,
        "size": size,
        "faces": MAX_FACES,
        "adapter_weights_gb": round(adapter / GB, 3),
        "image_encoder_weights_gb": round(encoder / GB, 3),
        "encoding_work_gb": round(encoding / GB, 3),
        "step_work_gb": round(bare / GB, 3),
        "step_work_with_adapter_gb": round(conditioned / GB, 3),
        "added_gb": round((adapter + encoder + max(conditioned - bare, 0)) / GB, 3),
    }


def main() -> None:
    start = time.perf_counter()
    rows = [estimate(family) for family in (sd15, sdxl)]
    print(json.dumps({"estimates": rows, "dtype": "fp16", "seconds": round(time.perf_counter() - start, 1)}, indent=2))


if __name__ == "__main__":
    main()
