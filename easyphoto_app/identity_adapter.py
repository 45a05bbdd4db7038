"""Identity without training: IP-Adapter plus-face conditions generation on the user's accepted face crops.

Before a face LoRA exists ("instant mode") it is the only source of the face; with the LoRAs it is an extra pull
towards the photos (the "identity strength", the adapter's scale; 0 = off). Generation, portraits and RL all ask this
module; the adapter (Apache-2.0, h94/IP-Adapter) downloads once through the same hub code as the base model.

The adapter is loaded with diffusers' own `load_ip_adapter` into the shared UNet, so every pipeline made from the
loaded one (inpainting, ControlNet) carries it; the faces are encoded once per request and handed to each call as
`ip_adapter_image_embeds`, which those pipelines take without an image encoder of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.hub import HubUnreachable, download_hub_files, hub_unreachable
from easyphoto_app.workspace import sha256_file

REPO = "h94/IP-Adapter"
LICENCE = "Apache-2.0"
# diffusers' IP-Adapter guide: scale 1.0 conditions on the image alone; about 0.5 balances the image and the text
# prompt. plus-face at 1.0 copies the crop's pose, light and expression and drops much of the prompt; 0.6 keeps the
# face while the prompt still sets the scene. With a face LoRA the LoRA carries the identity: the adapter is off
# unless asked for (0.3-0.5 when a face drifts), so nothing is downloaded for people who never use it.
INSTANT_SCALE = 0.6
MAX_FACES = 4  # the reference face first, then the most alike and frontal; each adds its 16 image tokens


@dataclass(frozen=True)
class AdapterFiles:
    subfolder: str
    weight_name: str
    image_encoder: str  # the encoder's folder inside the repository
    module: str  # what sd-webui-controlnet calls its preprocessor, for PNG info as A1111 writes it
    size: str  # what the download costs, for the sentences that offer it

    @property
    def files(self) -> list[str]:
        enc = self.image_encoder
        return [f"{self.subfolder}/{self.weight_name}", f"{enc}/config.json", f"{enc}/model.safetensors"]

    @property
    def name(self) -> str:
        return Path(self.weight_name).stem


# Both use the ViT-H/14 image encoder of models/image_encoder (2.53 GB; SDXL's "vit-h" adapter was trained on it)
FILES = {
    "sd15": AdapterFiles(
        "models", "ip-adapter-plus-face_sd15.safetensors", "models/image_encoder", "ip-adapter_clip_sd15", "2.6 GB"
    ),
    "sdxl": AdapterFiles(
        "sdxl_models",
        "ip-adapter-plus-face_sdxl_vit-h.safetensors",
        "models/image_encoder",
        "ip-adapter_clip_sdxl_plus_vith",
        "3.4 GB",
    ),
}


def adapter_files(family) -> AdapterFiles:
    """The family's adapter; any other family is refused here, before anything is downloaded."""
    files = FILES.get(getattr(family, "NAME", None))
    if files is None:
        label = getattr(family, "LABEL", str(family))
        raise UserError(f"Identity strength (IP-Adapter plus-face) exists for SD 1.5 and SDXL, not {label}: set it 0.")
    return files


AUTOMATIC = -1.0


def resolve_scale(scale: float, has_lora: bool) -> float:
    """The scale to draw with: AUTOMATIC (-1, the slider's far left) is INSTANT_SCALE without a face LoRA and off
    with one; any other value below 0 is off (a slider dragged just under 0 must not turn identity on)."""
    if scale <= AUTOMATIC:
        return 0.0 if has_lora else INSTANT_SCALE
    return max(float(scale), 0.0)


# ----------------------------------------------------------------------------- files


def cached_adapter(family, repo: str = REPO) -> Path | None:
    """The snapshot folder holding the family's adapter and its image encoder, if all of it is downloaded."""
    from huggingface_hub import try_to_load_from_cache

    files = adapter_files(family).files
    found = [try_to_load_from_cache(repo, f) for f in files]
    if not all(isinstance(f, str) for f in found):
        return None
    return Path(found[0]).parents[len(Path(files[0]).parts) - 1]


def ensure_adapter(family, progress=None, repo: str = REPO) -> Path:
    """The adapter's snapshot folder: from the cache, or downloaded now (once, with progress); offline and absent,
    a refusal in one line (everything else keeps working)."""
    files = adapter_files(family)
    folder = cached_adapter(family, repo)
    if folder is not None:
        return folder
    offline = hub_unreachable(repo)
    try:
        if not offline:
            return download_hub_files(repo, files.files, progress)[0]
    except HubUnreachable as exc:
        offline = str(exc)
    raise UserError(
        f"Identity strength needs the IP-Adapter {files.name} ({repo}, {LICENCE}, a one-off download of "
        f"{files.size}), which is not downloaded yet, and the Hugging Face Hub cannot be reached ({offline}). "
        "Connect once to download it, or set identity strength to 0."
    )


def adapter_hash(path: Path) -> str:
    """sd-webui-controlnet's model hash (sha256 of the file, first 8 hex; sha256_file caches it per file version)."""
    return sha256_file(path)[:8]


# ----------------------------------------------------------------------------- the user's faces


def reference_faces(ws, user: str, limit: int = MAX_FACES) -> list:
    """The user's accepted aligned crops as RGB images: the reference face first, then by likeness x frontalness."""
    from PIL import Image

    from easyphoto_app.faces.prepare import load_record  # noqa: PLC0415 - start-up (numpy)

    record = load_record(ws, user) or {}
    accepted = [p for p in record.get("photos", []) if p.get("accepted") and p.get("crop")]
    if not accepted:
        raise UserError(
            f"User '{user}' has no checked face photos yet: add photos on the Photos tab (or run 'prepare --user "
            f"{user} PHOTOS') before drawing with identity strength."
        )
    first = (record.get("reference") or {}).get("source")

    def order(p):
        s = p.get("scores", {})
        return (p["source"] != first, -s.get("similarity", s.get("sharpness", 0)) * max(s.get("frontal", 1), 0.05))

    return [Image.open(ws.root / p["crop"]).convert("RGB") for p in sorted(accepted, key=order)[:limit]]


# ----------------------------------------------------------------------------- the pipeline


def encode_faces(pipe, faces: list, guidance: bool):
    """The faces' image embeddings as the pipelines take them (`ip_adapter_image_embeds`'s one tensor): plus models
    read the encoder's penultimate hidden states; the unconditional half is a black image's, as diffusers makes it."""
    import torch

    with torch.no_grad():
        pos, neg = pipe.encode_image(faces, pipe.image_encoder.device, 1, output_hidden_states=True)
    return torch.stack([neg, pos]) if guidance else pos[None]


@dataclass
class Identity:
    """The conditioning of one request: the embeddings, the scale, and what PNG info says about them."""

    embeds: object  # torch.Tensor [2 (uncond, cond) with guidance else 1, faces, tokens, width]
    scale: float
    files: AdapterFiles
    weights: Path

    def call_kwargs(self, pipe) -> dict:
        """For one pipeline call of pipe (or a pipeline made from it): this person's scale, their faces."""
        pipe.set_ip_adapter_scale(self.scale)
        return {"ip_adapter_image_embeds": [self.embeds]}

    def png_field(self, unit: int = 0) -> str:
        """As sd-webui-controlnet writes an IP-Adapter unit (A1111 has no field of its own for it)."""
        model = f"{self.files.name} [{adapter_hash(self.weights)}]"
        return f'ControlNet {unit}: "Module: {self.files.module}, Model: {model}, Weight: {self.scale:g}"'


def prepare(loaded, ws, people: dict[str, list], scale: float, guidance: bool, progress=None) -> dict:
    """Set the LoadedModel up for one request: {user: Identity} for each person drawn ({user: their LoRAs}), or {}
    when the adapter is off for all of them (scale 0, or no person): then it is taken out of the UNet. Otherwise it
    is loaded (downloaded once if it must be) and each person's faces encoded; one whose scale resolves to 0 (`scale`
    -1 is automatic: resolve_scale) is drawn at scale 0, which the adapter's layers skip. `guidance`:
    classifier-free."""
    pipe, model = loaded.pipe, loaded.model
    scales = {user: resolve_scale(scale, bool(loras)) for user, loras in people.items()}
    if not scales or max(scales.values()) <= 0:
        loaded.use_ip_adapter(None)
        return {}
    if model.is_demo:
        way = (
            "set identity strength to 0"
            if scale > AUTOMATIC
            else f"train a face LoRA for '{next(iter(people))}' first (identity strength then stays off by itself)"
        )
        raise UserError(
            "The built-in demo model cannot use identity strength (the IP-Adapter is made for real SD 1.5 and SDXL "
            f"models): {way}, or choose a real model in Settings."
        )
    files = adapter_files(model.family)
    faces = {user: reference_faces(ws, user) for user, s in scales.items() if s > 0}
    folder = ensure_adapter(model.family, progress)
    loaded.use_ip_adapter(folder, files)
    weights = loaded.ip_adapter
    embeds = {user: encode_faces(pipe, found, guidance) for user, found in faces.items()}
    some = next(iter(embeds.values()))  # what a person at scale 0 is handed (never read)
    return {user: Identity(embeds.get(user, some), s, files, weights) for user, s in scales.items()}


def mode(identity: Identity | None, loras: list) -> str:
    """Which mode a picture was made in, in words for captions and results."""
    if identity and not loras:
        return f"instant mode (no LoRA; identity adapter at {identity.scale:g})"
    if identity:
        return f"LoRA + identity adapter at {identity.scale:g}"
    return "LoRA" if loras else "base model"
