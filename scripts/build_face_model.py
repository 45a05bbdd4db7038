"""Train the built-in face model (assets/face_model): Stable Diffusion 1.5's architecture, small, from scratch.

The data are the free face photos that packages ship (scripts/face_photos.py, docs/face-model-sources.md), minus
the people held out (HELD_OUT): they never appear in any training image and are the new users of the tests and of
benchmarks/likeness_chain.py. Seeded: the same photos, steps and seed give the same weights on the same machine.

Stages (each cached in --work, so a stage can be re-run alone):
  crops   aligned head crops with margin (hair, neck), 256 px, from dlib's boxes and eye landmarks
  vae     diffusers AutoencoderKL, 4 latent channels, /4 (identity survives the round trip at 128 px)
  decoder more decoder steps, encoder frozen, with an edge term (the latents stay the same)
  unet    UNet2DConditionModel with cross-attention + CLIPTextModel (SD 1.5's tokenizer), trained together on
          latents of augmented crops with captions in the app's words (1person, styles), EMA weights kept
  save    the pipeline as a diffusers folder, fp16 safetensors, with sources.json and build.json
  check   face rate on fixed seeds and the autoencoder's identity loss on the held-out people (dlib)

usage: python scripts/build_face_model.py [--photos DIR] [--out assets/face_model] [--work DIR]
           [--vae-steps N] [--decoder-steps N] [--unet-steps N]
           [--stages crops,vae,decoder,unet,save,check]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import face_photos  # noqa: E402

from easyphoto_app.demo_model import DEMO_LABEL, DEMO_VERSION, FACE_MODEL  # noqa: E402

RESOLUTION = 128
CROP_SIDE = 256
HELD_OUT = {
    "Joe Biden": {
        "source": "face_recognition==1.3.0 (PyPI sdist) tests/test_images/biden.jpg",
        "licence": face_photos.PUBLIC_DOMAIN_US,
    },
    "Luis Pedro Coelho": {
        "source": "mahotas==1.4.19 (PyPI wheel) mahotas/demos/data/luispedro.jpg",
        "licence": "MIT (the package author's own photo in his package)",
    },
    "Eileen Collins": {
        "source": "scikit-image (PyPI wheel) skimage/data/astronaut.png",
        "licence": "public domain (NASA photograph)",
    },
}
GROUPS = {"kphotoalbum demo: Jim, Wayne and Jesper": ["Jim", "Wayne", "Jesper K. Pedersen"]}
WOMEN = {"Grace Hopper", "Marie Curie", "Eileen Collins"}
MONOCHROME = {"Charles Barkla", "Dmitri Mendeleev", "Henry Moseley", "Marie Curie"}
STYLE_WORDS = {  # what an augmentation makes the image look like, in the words of the app's styles
    "grey": "black and white photo",
    "film": "35mm film photo, grain, warm tones",
    "close": "close-up photo",
    "soft": "soft light",
    "blur": "blurry photo",
}
VAE_CONFIG = dict(
    block_out_channels=(32, 64, 128),
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=RESOLUTION,
    mid_block_add_attention=False,
)
VAE_PATCH = 64  # the autoencoder is all convolutions (no attention), so it trains on patches: 4x cheaper a view
UNET_CONFIG = dict(
    sample_size=RESOLUTION // 4,
    block_out_channels=(32, 64, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    cross_attention_dim=64,
    attention_head_dim=4,
    norm_num_groups=16,
)
# Measured on Luis Pedro Coelho (benchmarks/likeness_chain.py's photo set): SD 1.5's defaults (rank 128, lr 1e-4, 800
# steps) and rank 16 at 5e-4 turn 5 of 8 samples into noise; these keep the faces (7 of 8 found).
TRAIN_DEFAULTS = {"rank": 16, "lora_alpha": 16.0, "learning_rate": 5e-5, "max_train_steps": 300}
TEXT_CONFIG = dict(
    hidden_size=64, intermediate_size=256, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77
)


# ----------------------------------------------------------------------------- crops


def head_crops(photo_dir: Path) -> list[dict]:
    """Every face of every training photo as an eye-levelled 256 px crop, 2x the face box, centred a little above
    the box (hair in, chin and neck in)."""
    from easyphoto_app.faces.dlib_backend import DlibBackend
    from easyphoto_app.faces.images import load_rgb

    backend = DlibBackend()
    crops = []
    for photo, path in zip(face_photos.PHOTOS, face_photos.fetch(photo_dir, photo_dir / ".cache")):
        if photo.person in HELD_OUT:
            continue
        img = load_rgb(path, 2048)
        faces = [f for f in backend.analyze(img) if f.size >= 100]
        for i, face in enumerate(sorted(faces, key=lambda f: f.bbox[0])):
            crops.append(
                {
                    "person": photo.person if len(faces) == 1 else f"{photo.person} #{i + 1}",
                    "file": Path(photo.member).name,
                    "image": _crop(img, face),
                }
            )
    return crops


def _crop(img: np.ndarray, face) -> np.ndarray:
    (lx, ly), (rx, ry) = sorted(map(tuple, face.kps[:2]))
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    (x1, y1, x2, y2), side = face.bbox, 2.0 * face.size
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 - 0.1 * face.size
    m = cv2.getRotationMatrix2D((cx, cy), angle, CROP_SIDE / side)
    m[:, 2] += (CROP_SIDE / 2 - cx, CROP_SIDE / 2 - cy)
    return cv2.warpAffine(img, m, (CROP_SIDE, CROP_SIDE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def augment(crop: np.ndarray, person: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A varied 128 px view of one crop (scale, shift, turn, mirror, light, colour, blur, grain, JPEG) and its
    caption, which names what the view looks like."""
    words = []
    scale = rng.uniform(0.85, 1.3)
    if scale > 1.2:
        words.append(STYLE_WORDS["close"])
    m = cv2.getRotationMatrix2D((CROP_SIDE / 2, CROP_SIDE / 2), rng.uniform(-10, 10), scale)
    m[:, 2] += rng.uniform(-16, 16, 2)
    out = cv2.warpAffine(crop, m, (CROP_SIDE, CROP_SIDE), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out.astype(np.float32) * rng.uniform(0.75, 1.25) + rng.uniform(-20, 20)
    grey = person.split(" #")[0] in MONOCHROME or rng.random() < 0.15
    if grey:
        out = np.repeat(out.mean(2, keepdims=True), 3, 2)
        words.append(STYLE_WORDS["grey"])
    else:
        out = out * rng.uniform(0.85, 1.15, 3)
    if rng.random() < 0.15:
        out = out * (1.12, 1.0, 0.85) + rng.normal(0, 8, out.shape)
        words.append(STYLE_WORDS["film"])
    out = cv2.resize(np.clip(out, 0, 255).astype(np.uint8), (RESOLUTION, RESOLUTION), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.1:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.8, 1.6))
        words.append(STYLE_WORDS["blur"])
    elif rng.random() < 0.1:
        words.append(STYLE_WORDS["soft"])
        out = cv2.GaussianBlur(out, (0, 0), 0.5)
    if rng.random() < 0.3:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 90))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    who = "woman" if person.split(" #")[0] in WOMEN else "man"
    caption = ", ".join(["1person", f"portrait photo of a {who}", *words])
    return out, caption


def to_tensor(images):
    import torch

    return torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2) / 127.5 - 1


def to_uint8(x) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


# ----------------------------------------------------------------------------- held-out identity check


def held_out_crops() -> list[tuple[str, np.ndarray]]:
    """One 128 px head crop of each held-out person, cut as the training crops are."""
    from easyphoto_app.faces.dlib_backend import DlibBackend
    from easyphoto_app.faces.images import load_rgb

    backend = DlibBackend()
    out = []
    for name, path in held_out_photos().items():
        img = load_rgb(path, 2048)
        face = max(backend.analyze(img), key=lambda f: f.size)
        out.append((name, cv2.resize(_crop(img, face), (RESOLUTION, RESOLUTION), interpolation=cv2.INTER_AREA)))
    return out


def held_out_photos(folder: Path | None = None) -> dict[str, Path]:
    """The held-out people's photos, from the registries (Biden, Coelho) and scikit-image (Collins)."""
    import skimage

    folder = folder or Path(tempfile.gettempdir()) / "easyphoto-held-out"
    photos = [p for p in face_photos.PHOTOS if p.person in HELD_OUT]
    paths = {p.person: path for p, path in zip(photos, _fetch_some(photos, folder))}
    paths["Eileen Collins"] = Path(skimage.data.__file__).parent / "astronaut.png"
    return paths


def _fetch_some(photos, folder: Path) -> list[Path]:
    out = []
    for photo in photos:
        target = folder / Path(photo.member).name
        if not target.exists():
            folder.mkdir(parents=True, exist_ok=True)
            target.write_bytes(face_photos.extract(face_photos.download(photo, folder / ".cache"), photo.member))
        out.append(target)
    return out


def identity_loss(backend, originals: list[np.ndarray], copies: list[np.ndarray]) -> list[float | None]:
    """dlib distance (the raw 128-d descriptors, as dlib's 0.6 same-person rule means it) between each original
    and its copy, both enlarged to 512 px; None where the copy has no face."""
    out = []
    for a, b in zip(originals, copies):
        da, db = raw_descriptor(backend, a), raw_descriptor(backend, b)
        out.append(None if da is None or db is None else round(float(np.linalg.norm(da - db)), 3))
    return out


def raw_descriptor(backend, img: np.ndarray) -> np.ndarray | None:
    """The largest face's dlib descriptor before the backend normalises it (its length is about 1.4)."""
    import dlib

    big = np.ascontiguousarray(
        cv2.resize(img, (512, 512), interpolation=cv2.INTER_CUBIC) if max(img.shape[:2]) < 512 else img
    )
    faces = backend.analyze(big)
    if not faces:
        return None
    box = max(faces, key=lambda f: f.size).bbox
    shape = backend.landmarks(big, dlib.rectangle(*[int(round(v)) for v in box]))
    return np.asarray(backend.descriptor.compute_face_descriptor(big, shape))


# ----------------------------------------------------------------------------- vae


def train_vae(crops: list[dict], steps: int, seed: int, log) -> AutoencoderKL:  # noqa: F821
    import torch
    from diffusers import AutoencoderKL

    from easyphoto_app.faces.dlib_backend import DlibBackend

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-4, total_steps=steps, pct_start=0.05)
    held = held_out_crops()
    backend = DlibBackend()
    t0 = time.time()
    for step in range(1, steps + 1):
        x = patch_batch(crops, rng)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + 1e-6 * post.kl().mean()
        optimise(opt, sched, loss, vae.parameters())
        if step % 200 == 0 or step == steps:
            log(
                {
                    "stage": "vae",
                    "step": step,
                    "s": round(time.time() - t0),
                    "loss": round(loss.item(), 4),
                    "held_out_distance": held_out_distance(backend, held, vae),
                }
            )
    return vae


def tune_decoder(vae, crops: list[dict], steps: int, seed: int, log) -> None:
    """More decoder steps with the encoder frozen: sharper faces, and the latents the UNet learned stay the same.
    An edge term (L1 on image gradients) asks for the detail that identity lives in."""
    import torch

    from easyphoto_app.faces.dlib_backend import DlibBackend

    rng = np.random.default_rng(seed + 2)
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    held, backend, t0 = held_out_crops(), DlibBackend(), time.time()
    for step in range(1, steps + 1):
        x = patch_batch(crops, rng)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + _edges(rec, x)
        optimise(opt, sched, loss, params)
        if step % 200 == 0 or step == steps:
            log(
                {
                    "stage": "decoder",
                    "step": step,
                    "s": round(time.time() - t0),
                    "loss": round(loss.item(), 4),
                    "held_out_distance": held_out_distance(backend, held, vae),
                }
            )
    vae.requires_grad_(True)


def patch_batch(crops: list[dict], rng: np.random.Generator, size: int = 16):
    """`size` random 64 px patches of fresh augmented views: what the autoencoder trains on."""
    return to_tensor(
        [_patch(augment(crops[i]["image"], crops[i]["person"], rng)[0], rng) for i in rng.integers(0, len(crops), size)]
    )


def optimise(opt, sched, loss, params) -> None:
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()


def held_out_distance(backend, held: list[tuple[str, np.ndarray]], vae) -> dict:
    """Each held-out person's identity loss through the autoencoder, by name."""
    images = [h for _, h in held]
    return dict(zip([n for n, _ in held], identity_loss(backend, images, reconstruct(vae, images))))


def _edges(a, b):
    def grads(x):
        return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]

    (ay, ax), (by, bx) = grads(a), grads(b)
    return (ay - by).abs().mean() + (ax - bx).abs().mean()


def _patch(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    y, x = rng.integers(0, RESOLUTION - VAE_PATCH + 1, 2)
    return img[y : y + VAE_PATCH, x : x + VAE_PATCH]


def reconstruct(vae, images: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    vae.eval()
    with torch.no_grad():
        out = vae.decode(vae.encode(to_tensor(images)).latent_dist.mode()).sample
    vae.train()
    return list(to_uint8(out))


# ----------------------------------------------------------------------------- unet + text encoder


def blend(crops: list[dict], rng: np.random.Generator) -> dict:
    """A face between two people: two eye-levelled crops of different people mixed pixel by pixel. The crops share
    their framing, so the mix is one face (soft where they differ); with 9 people, 36 pairs of them give the model
    faces between its people to learn, not only the people themselves."""
    while True:
        a, b = (crops[i] for i in rng.choice(len(crops), 2, replace=False))
        if a["person"].split(" #")[0] != b["person"].split(" #")[0]:
            break
    w = rng.uniform(0.3, 0.7)
    image = (w * a["image"].astype(np.float32) + (1 - w) * b["image"].astype(np.float32)).round().astype(np.uint8)
    person = a["person"] if w >= 0.5 else b["person"]  # its caption's words (woman, grey) follow the larger share
    return {"image": image, "person": person}


def latent_pool(vae, crops: list[dict], size: int, seed: int, blends: float = 0.0):
    """`size` augmented views of the crops (a share `blends` of them mixes of two people), encoded once:
    (means, stds, captions)."""
    import torch

    rng = np.random.default_rng(seed + 1)
    means, stds, captions = [], [], []
    vae.eval()

    def pick():
        c = blend(crops, rng) if rng.random() < blends else crops[int(rng.integers(0, len(crops)))]
        return augment(c["image"], c["person"], rng)

    with torch.no_grad():
        for start in range(0, size, 64):
            views = [pick() for _ in range(min(64, size - start))]
            dist = vae.encode(to_tensor([v for v, _ in views])).latent_dist
            means.append(dist.mean)
            stds.append(dist.std)
            captions += [c for _, c in views]
    return torch.cat(means), torch.cat(stds), captions


def build_text_encoder(tokenizer):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **TEXT_CONFIG,
        )
    )


def train_unet(
    vae,
    crops: list[dict],
    steps: int,
    seed: int,
    log,
    batch: int = 16,
    pool_size: int = 6000,
    start: Path | None = None,
    blends: float = 0.0,
    lr: float = 1e-3,
    stage: str = "unet",
):
    """The UNet and text encoder from scratch, or on from `start` (a work dir with unet/ and text_encoder/)."""
    import copy

    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from easyphoto_app.checkpoints import SD15_CONFIG

    means, stds, captions = latent_pool(vae, crops, pool_size, seed + (start is not None), blends)
    scaling = vae.config.scaling_factor if start else float(1.0 / means.std())
    vae.register_to_config(scaling_factor=round(scaling, 5))
    log({"stage": "latents", "pool": len(captions), "blends": blends, "scaling_factor": round(scaling, 5)})
    tokenizer = CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer")
    ids = tokenizer(
        captions + [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    empty = ids[-1]
    torch.manual_seed(seed)
    if start:
        unet = UNet2DConditionModel.from_pretrained(start / "unet")
        text_encoder = CLIPTextModel.from_pretrained(start / "text_encoder")
    else:
        unet, text_encoder = UNet2DConditionModel(**UNET_CONFIG), build_text_encoder(tokenizer)
    noise_sched = DDPMScheduler.from_pretrained(SD15_CONFIG / "scheduler")
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.03)
    ema = [copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)]
    gen = torch.Generator().manual_seed(seed)
    t0, running = time.time(), None
    for step in range(1, steps + 1):
        pick = torch.randint(0, len(captions), (batch,), generator=gen)
        latents = (means[pick] + stds[pick] * torch.randn(means[pick].shape, generator=gen)) * scaling
        tok = ids[pick].clone()
        tok[torch.rand(batch, generator=gen) < 0.1] = empty  # unconditional 10% of the time: guidance works
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,), generator=gen)
        pred = unet(noise_sched.add_noise(latents, noise, t), t, text_encoder(tok)[0]).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        optimise(opt, sched, loss, params)
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for live, avg in zip((unet, text_encoder), ema):
                for p, q in zip(live.parameters(), avg.parameters()):
                    q.lerp_(p, 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == steps:
            log({"stage": stage, "step": step, "s": round(time.time() - t0), "loss": round(running, 4)})
    return ema[0], ema[1], tokenizer


# ----------------------------------------------------------------------------- save + check


def save(out: Path, vae, unet, text_encoder, tokenizer, build: dict) -> None:
    import shutil

    import torch
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    from easyphoto_app.checkpoints import SD15_CONFIG

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_pretrained(SD15_CONFIG / "scheduler"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    staging = out.with_name(out.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    pipe.to(torch.float16).save_pretrained(staging, safe_serialization=True)
    shutil.rmtree(staging / "tokenizer")  # SD 1.5's, as in assets/sd15: the install copies it from there (1.5 MB)
    for keep in ("README.md",):
        if (out / keep).exists():
            shutil.copy2(out / keep, staging / keep)
    (staging / "sources.json").write_text(json.dumps(sources(), indent=1) + "\n")
    (staging / "build.json").write_text(json.dumps(build, indent=1) + "\n")
    label = DEMO_LABEL.format(photos=build["photos"], people=build["people"])
    marker = {
        "version": DEMO_VERSION,
        "label": label,
        "resolution": RESOLUTION,
        "train_resolution": RESOLUTION,
        "train_defaults": TRAIN_DEFAULTS,
    }
    (staging / "easyphoto_demo.json").write_text(json.dumps(marker, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def training_people() -> set[str]:
    people = set()
    for photo in face_photos.PHOTOS:
        if photo.person not in HELD_OUT:
            people.update(GROUPS.get(photo.person, [photo.person]))
    return people


def sources() -> dict:
    train = [
        {"person": p.person, "source": f"{p.package} ({p.registry}) {p.member}", "licence": p.licence}
        for p in face_photos.PHOTOS
        if p.person not in HELD_OUT
    ]
    held = [{"person": name, **info} for name, info in HELD_OUT.items()]
    return {"train": train, "held_out": held}


def check(model_dir: Path, seeds: int = 64) -> dict:
    """Face rate of the saved pipeline on fixed seeds, and the autoencoder's loss on the held-out people."""
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    from easyphoto_app.checkpoints import SD15_CONFIG
    from easyphoto_app.faces.dlib_backend import DlibBackend

    # the folder has no tokenizer of its own (the app installs SD 1.5's beside it)
    pipe = StableDiffusionPipeline.from_pretrained(
        model_dir,
        torch_dtype=torch.float32,
        safety_checker=None,
        tokenizer=CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer"),
    )
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    backend = DlibBackend()
    found, t0 = 0, time.time()
    for start in range(0, seeds, 16):
        gens = [torch.Generator().manual_seed(10_000 + s) for s in range(start, min(seeds, start + 16))]
        images = pipe(
            ["1person, portrait photo of a man"] * len(gens),
            num_inference_steps=25,
            guidance_scale=5.0,
            generator=gens,
            height=RESOLUTION,
            width=RESOLUTION,
            output_type="np",
        ).images
        for img in images:
            big = cv2.resize((img * 255).round().astype(np.uint8), (512, 512), interpolation=cv2.INTER_CUBIC)
            found += bool(backend.analyze(big))
    return {
        "face_rate": found / seeds,
        "seeds": seeds,
        "sample_s": round(time.time() - t0, 1),
        "vae_held_out_distance": held_out_distance(backend, held_out_crops(), pipe.vae),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=Path, default=None, help="where scripts/face_photos.py puts the photos")
    ap.add_argument("--out", type=Path, default=FACE_MODEL)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "easyphoto-face-model")
    ap.add_argument("--vae-steps", type=int, default=3000)
    ap.add_argument("--unet-steps", type=int, default=4000)
    ap.add_argument("--decoder-steps", type=int, default=500, help="decoder-only steps after the UNet's (0: none)")
    ap.add_argument(
        "--blend-steps",
        type=int,
        default=0,
        help="UNet steps on after --unet-steps with blends of two people (0: none, as shipped; see README)",
    )
    ap.add_argument("--blends", type=float, default=0.5, help="share of the blend stage's views that mix two people")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stages", default="crops,vae,unet,blend,decoder,save,check")
    a = ap.parse_args()
    import torch

    stages = set(a.stages.split(","))
    a.work.mkdir(parents=True, exist_ok=True)
    log_file = (a.work / "log.jsonl").open("a")

    def log(row):
        print(json.dumps(row), flush=True)
        log_file.write(json.dumps(row) + "\n")
        log_file.flush()

    started = time.time()
    crops_file = a.work / "crops.npz"
    if "crops" in stages or not crops_file.exists():
        crops = head_crops(a.photos or a.work / "photos")
        np.savez(crops_file, images=np.stack([c["image"] for c in crops]), people=[c["person"] for c in crops])
        log({"stage": "crops", "crops": len(crops), "people": sorted({c["person"] for c in crops})})
    data = np.load(crops_file)
    crops = [{"image": im, "person": str(p)} for im, p in zip(data["images"], data["people"])]
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if "vae" in stages:
        train_vae(crops, a.vae_steps, a.seed, log).save_pretrained(a.work / "vae")
    vae = AutoencoderKL.from_pretrained(a.work / "vae")
    if "decoder" in stages and a.decoder_steps:
        tune_decoder(vae, crops, a.decoder_steps, a.seed, log)
        vae.save_pretrained(a.work / "vae")
    if "unet" in stages:
        unet, text_encoder, tokenizer = train_unet(vae, crops, a.unet_steps, a.seed, log)
        unet.save_pretrained(a.work / "unet")
        text_encoder.save_pretrained(a.work / "text_encoder")
        vae.save_pretrained(a.work / "vae")  # its scaling factor was set from the latents
    if "blend" in stages and a.blend_steps:
        unet, text_encoder, _ = train_unet(
            vae, crops, a.blend_steps, a.seed, log, start=a.work, blends=a.blends, lr=3e-4, stage="blend"
        )
        unet.save_pretrained(a.work / "unet")
        text_encoder.save_pretrained(a.work / "text_encoder")
    if "save" in stages:
        from transformers import CLIPTextModel, CLIPTokenizer

        from easyphoto_app.checkpoints import SD15_CONFIG

        build = {
            "resolution": RESOLUTION,
            "vae_steps": a.vae_steps,
            "decoder_steps": a.decoder_steps,
            "unet_steps": a.unet_steps,
            "blend_steps": a.blend_steps,
            "blends": a.blends,
            "seed": a.seed,
            "crops": len(crops),
            "people": len(training_people()),
            "photos": len({p.member for p in face_photos.PHOTOS if p.person not in HELD_OUT}),
            "torch": torch.__version__,
            "build_s": round(time.time() - started),
        }
        save(
            a.out,
            vae,
            UNet2DConditionModel.from_pretrained(a.work / "unet"),
            CLIPTextModel.from_pretrained(a.work / "text_encoder"),
            CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer"),
            build,
        )
        log({"stage": "save", "out": str(a.out)})
    if "check" in stages:
        log({"stage": "check", **check(a.out)})


if __name__ == "__main__":
    main()
