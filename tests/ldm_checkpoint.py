"""Single-file checkpoints in the original (LDM / WebUI) key layout: SD1.5-shaped with random weights, or an SDXL
pipeline's own weights in Stability's (SGM) layout.

diffusers converts that layout to its own (`from_single_file`) but not back, so the names are mapped here from
the layout itself: the UNet's input/middle/output blocks (and SDXL's `label_emb`), the VAE's down/mid/up, CLIP under
`cond_stage_model.transformer.text_model.` (SDXL: `conditioner.embedders.0.transformer.`) and SDXL's OpenCLIP encoder
under `conditioner.embedders.1.model.` with q, k and v fused. The SD1.5 models are built from assets/sd15 (the
configs the app loads single files with), so a successful load also checks those configs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_name(name: str, up_has_attention: list[bool]) -> str:
    fixed = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
    }
    for k, v in fixed.items():
        if name.startswith(k + "."):
            return v + name[len(k) :]
    rules = [
        (r"down_blocks\.(\d)\.resnets\.(\d)\.", lambda i, j: f"input_blocks.{3 * i + j + 1}.0."),
        (r"down_blocks\.(\d)\.attentions\.(\d)\.", lambda i, j: f"input_blocks.{3 * i + j + 1}.1."),
        (r"down_blocks\.(\d)\.downsamplers\.(0)\.conv\.", lambda i, j: f"input_blocks.{3 * (i + 1)}.0.op."),
        (r"mid_block\.resnets\.(\d)()\.", lambda j, _: f"middle_block.{2 * j}."),
        (r"mid_block\.attentions\.(0)()\.", lambda j, _: "middle_block.1."),
        (r"up_blocks\.(\d)\.resnets\.(\d)\.", lambda i, j: f"output_blocks.{3 * i + j}.0."),
        (r"up_blocks\.(\d)\.attentions\.(\d)\.", lambda i, j: f"output_blocks.{3 * i + j}.1."),
        (
            r"up_blocks\.(\d)\.upsamplers\.(0)\.",
            lambda i, j: f"output_blocks.{3 * i + 2}.{2 if up_has_attention[i] else 1}.",
        ),
    ]
    for pattern, make in rules:
        m = re.match(pattern, name)
        if m:
            rest = name[m.end() :]
            if ".resnets." in pattern:
                part, _, tail = rest.partition(".")
                rest = f"{RESNET.get(part, part)}.{tail}"
            return make(*(int(g) if g else 0 for g in m.groups())) + rest
    raise KeyError(name)


def _vae_name(name: str, blocks: int) -> str:
    name = name.replace("conv_norm_out", "norm_out")
    m = re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d)\.(.*)", name)
    if m:
        side, kind, j, rest = m.groups()
        if kind == "resnets":
            return f"{side}.mid.block_{int(j) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        part = next(k for k in VAE_ATTN if rest.startswith(k + "."))
        return f"{side}.mid.attn_1.{VAE_ATTN[part]}{rest[len(part) :]}"
    m = re.match(r"encoder\.down_blocks\.(\d)\.(resnets\.(\d)|downsamplers\.0)\.(.*)", name)
    if m:
        i, what, j, rest = m.groups()
        return f"encoder.down.{i}.{f'block.{j}' if j else 'downsample'}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
    m = re.match(r"decoder\.up_blocks\.(\d)\.(resnets\.(\d)|upsamplers\.0)\.(.*)", name)
    if m:
        i, what, j, rest = m.groups()
        level = blocks - 1 - int(i)  # LDM counts the decoder's levels from the bottom
        return f"decoder.up.{level}.{f'block.{j}' if j else 'upsample'}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
    return name


def sd15_models(config: Path, dtype=torch.float16, seed: int = 0):
    """UNet, VAE and CLIP text encoder from the configs, with random weights in `dtype`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    models = []
    for model in (unet, vae, text):
        model = model.to_empty(device="cpu").to(dtype)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.02)
        models.append(model.eval())
    return models


OPENCLIP = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _openclip_state_dict(text) -> dict:
    """A CLIPTextModelWithProjection in OpenCLIP's names: resblocks with one in_proj for q, k and v, the projection
    as a matrix applied from the right."""
    sd, out = text.state_dict(), {}
    for k, v in sd.items():
        m = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.*)", k)
        if m and not re.match(r"self_attn\.[qkv]_proj\.", m.group(2)):
            part = next(p for p in OPENCLIP if m.group(2).startswith(p + "."))
            out[f"transformer.resblocks.{m.group(1)}.{OPENCLIP[part]}{m.group(2)[len(part) :]}"] = v
    for i in range(text.config.num_hidden_layers):
        for kind in ("weight", "bias"):
            qkv = [sd[f"text_model.encoder.layers.{i}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"transformer.resblocks.{i}.attn.in_proj_{kind}"] = torch.cat(qkv)
    out.update(
        {
            "token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
            "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
            "ln_final.weight": sd["text_model.final_layer_norm.weight"],
            "ln_final.bias": sd["text_model.final_layer_norm.bias"],
            "text_projection": sd["text_projection.weight"].T,
        }
    )
    return out


def ldm_state_dict(unet, vae, text, text_2=None) -> dict:
    """SD1.5's layout, or SDXL's (SGM) when a second text encoder is given."""
    up_attn = ["CrossAttn" in t for t in unet.config.up_block_types]
    out = {f"model.diffusion_model.{_unet_name(k, up_attn)}": v for k, v in unet.state_dict().items()}
    blocks = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        ldm = _vae_name(k, blocks)
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM's VAE attention projections are 1x1 convolutions
        out[f"first_stage_model.{ldm}"] = v
    clip = "conditioner.embedders.0.transformer." if text_2 is not None else "cond_stage_model.transformer."
    out.update({f"{clip}text_model.{k.removeprefix('text_model.')}": v for k, v in text.state_dict().items()})
    if text_2 is not None:
        out.update({f"conditioner.embedders.1.model.{k}": v for k, v in _openclip_state_dict(text_2).items()})
    return {k: v.contiguous() for k, v in out.items()}


def write_sdxl_checkpoint(path: Path, pipe) -> Path:
    """An SDXL pipeline's weights as one WebUI-style file."""
    from safetensors.torch import save_file

    save_file(ldm_state_dict(pipe.unet, pipe.vae, pipe.text_encoder, pipe.text_encoder_2), str(path))
    return path


def write_sd15_checkpoint(path: Path, config: Path, dtype=torch.float16) -> tuple[Path, dict]:
    """Writes the file; returns it and the diffusers-named UNet weights it holds (to compare after a load)."""
    from safetensors.torch import save_file

    unet, vae, text = sd15_models(config, dtype)
    save_file(ldm_state_dict(unet, vae, text), str(path))
    probe = {
        k: v.clone()
        for k, v in unet.state_dict().items()
        if k in ("conv_in.weight", "up_blocks.1.upsamplers.0.conv.weight", "down_blocks.2.attentions.1.proj_out.weight")
    }
    return path, probe


def random_sd15(folder: Path) -> str:
    """A single-file checkpoint of SD1.5's shape with random weights (about 2 GB), for benchmarks: its path."""
    from easyphoto_app.checkpoints import SD15_CONFIG

    return str(write_sd15_checkpoint(Path(folder) / "sd15-random.safetensors", SD15_CONFIG)[0])


if __name__ == "__main__":  # python tests/ldm_checkpoint.py FOLDER: write random_sd15 there, print its path
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    print(random_sd15(Path(sys.argv[1])))
