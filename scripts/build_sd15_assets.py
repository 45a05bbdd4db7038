"""Writes assets/sd15/: the Stable Diffusion 1.5 pipeline configs and CLIP tokenizer that load WebUI single-file
checkpoints offline (diffusers otherwise fetches them from the Hub), and that the demo model tokenizes with.

usage: python scripts/build_sd15_assets.py PATH/TO/open_clip_torch-*.whl
   (get the wheel with: pip download --no-deps open_clip_torch)

- The configs are SD1.5's published architecture (runwayml/stable-diffusion-v1-5 model_index and component
  configs), written through diffusers' and transformers' own config classes so unset fields get their defaults.
- The tokenizer is OpenAI CLIP's byte-level BPE: `bpe_simple_vocab_16e6.txt.gz`, shipped inside the
  open_clip_torch wheel (MIT licence). vocab.json = the 256 byte characters, the same with `</w>`, one token per
  merge (the first 48,894 merges), then <|startoftext|> and <|endoftext|>: 49,408 tokens, the ids SD1.5's text
  encoder was trained with. merges.txt = those merges. tests/test_model_files.py checks it id for id.
"""

from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from easyphoto_app.settings import ASSETS  # noqa: E402

OUT = ASSETS / "sd15"
MERGES = 49152 - 256 - 2  # the merges CLIP uses (its vocabulary is 49,408 = 512 byte tokens + merges + 2 specials)


def write_tokenizer(wheel: Path, folder: Path) -> int:
    from transformers.convert_slow_tokenizer import bytes_to_unicode  # GPT-2/CLIP's reversible byte table

    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
        lines = gzip.decompress(z.read(name)).decode("utf-8").split("\n")
    merges = lines[1 : 1 + MERGES]  # line 0 is a version header
    chars = list(bytes_to_unicode().values())
    tokens = (
        chars
        + [c + "</w>" for c in chars]
        + ["".join(m.split()) for m in merges]
        + ["<|startoftext|>", "<|endoftext|>"]
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(
        json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8"
    )
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    specials = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                **specials,
                "model_max_length": 77,
                "do_lower_case": True,
                "tokenizer_class": "CLIPTokenizer",
                "clean_up_tokenization_spaces": True,
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    return len(tokens)


def write_configs(folder: Path, vocab_size: int) -> None:
    import diffusers
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig

    unet = {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
    }
    vae = {
        "sample_size": 512,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [128, 256, 512, 512],
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
    }
    scheduler = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000,
        "set_alpha_to_one": False,
        "skip_prk_steps": True,
        "steps_offset": 1,
        "clip_sample": False,
    }
    for name, cls, values in (
        ("unet", UNet2DConditionModel, unet),
        ("vae", AutoencoderKL, vae),
        ("scheduler", PNDMScheduler, scheduler),
    ):
        config = dict(_instantiate_config(cls, values))  # the class fills in its defaults
        config.update(_class_name=cls.__name__, _diffusers_version=diffusers.__version__)
        config.pop("_use_default_values", None)
        target = folder / name / ("scheduler_config.json" if name == "scheduler" else "config.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
        architectures=["CLIPTextModel"],
    ).save_pretrained(folder / "text_encoder")
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionPipeline",
                "_diffusers_version": diffusers.__version__,
                "feature_extractor": [None, None],
                "image_encoder": [None, None],
                "safety_checker": [None, None],
                "requires_safety_checker": False,
                "scheduler": ["diffusers", "PNDMScheduler"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            indent=2,
        ),
        encoding="utf-8",
    )


def _instantiate_config(cls, values: dict):
    import torch

    if not hasattr(cls, "parameters"):  # a scheduler: no weights
        return cls.from_config(values).config
    with torch.device("meta"):  # no memory for SD1.5's weights, only its config
        return cls.from_config(values).config


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    size = write_tokenizer(Path(sys.argv[1]), OUT / "tokenizer")
    write_configs(OUT, size)
    print(f"wrote {OUT} (tokenizer: {size} tokens)")


if __name__ == "__main__":
    main()
