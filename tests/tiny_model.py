"""The tests' fast model: SD 1.5's architecture, tiny, random weights (images are noise).

Most tests exercise the app's flow, not what it paints; on this model a training or an RL step costs a fraction
of the face model's. It is installed where the demo model goes and marked as the current demo, so `--model demo`
runs on it; the tests that look at learning use the shipped face model (assets/face_model) instead.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from easyphoto_app.demo_model import DEMO_VERSION

LABEL = "Demo model, the tests' stand-in (tiny, random weights): images are noise."
RESOLUTION = 128
TRAIN_RESOLUTION = 64  # train / RL at this size to stay quick


def build_random_model(folder: Path) -> Path:
    """Build the tiny random pipeline deterministically as a diffusers folder marked as the demo."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from easyphoto_app.checkpoints import SD15_CONFIG
    from easyphoto_app.workspace import atomic_write_json

    folder = Path(folder)
    staging = folder.with_name(folder.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer")  # SD1.5's own: prompts tokenize the same
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(1)
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=16,
        layers_per_block=1,
        sample_size=RESOLUTION,
    )
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    scheduler = PNDMScheduler.from_pretrained(SD15_CONFIG / "scheduler")  # SD1.5's noise schedule, exactly
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(staging, safe_serialization=True)
    atomic_write_json(
        staging / "easyphoto_demo.json",
        {"version": DEMO_VERSION, "label": LABEL, "resolution": RESOLUTION, "train_resolution": TRAIN_RESOLUTION},
    )
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return folder


def build_tiny_sdxl(folder: Path, diffusers_shapes: bool = False) -> Path:
    """A tiny SDXL-architecture pipeline (random weights) as a diffusers folder: two CLIP text encoders, the second
    with a projection, a UNet with `addition_embed_type="text_time"`; diffusers' own small SDXL test shapes, with SDXL's
    real tokenizers (so the text encoders take CLIP's vocabulary) and a /8 autoencoder that overflows in fp16 as
    SDXL's does (force_upcast). The second encoder is wider than the first and 10 layers deep, as SDXL's is, so that a
    single file of this model reads as SDXL base to diffusers (it sniffs layer 9 of that encoder and tells the two
    encoders apart by their width). `diffusers_shapes`: exactly diffusers' test shapes instead (a /2 autoencoder, two
    equal 5-layer encoders, one norm group), as someone else's tiny SDXL would be."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from easyphoto_app.checkpoints import SD15_CONFIG

    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer")  # SDXL's first tokenizer is this one
    tokenizer_2 = CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer", pad_token="!")  # its second pads with "!"
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=32 if diffusers_shapes else 8,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=32 + (32 if diffusers_shapes else 48),
        **({"norm_num_groups": 1} if diffusers_shapes else {}),
    )
    torch.manual_seed(1)
    if diffusers_shapes:
        vae = AutoencoderKL(
            block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            sample_size=128,
        )
    else:
        vae = AutoencoderKL(
            block_out_channels=(16, 32, 32, 32),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=16,
            layers_per_block=1,
            sample_size=64,
            scaling_factor=0.13025,
            force_upcast=True,
        )
    config = dict(
        vocab_size=len(tokenizer),
        intermediate_size=37,
        num_attention_heads=4,
        projection_dim=32,
        hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(2)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(**config, hidden_size=32, num_hidden_layers=5, pad_token_id=tokenizer.pad_token_id)
    )
    torch.manual_seed(3)
    width, layers = (32, 5) if diffusers_shapes else (48, 10)
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(**config, hidden_size=width, num_hidden_layers=layers, pad_token_id=tokenizer_2.pad_token_id)
    )
    scheduler = EulerDiscreteScheduler.from_pretrained(SD15_CONFIG / "scheduler")  # SDXL's betas are SD 1.5's
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
