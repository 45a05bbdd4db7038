"""Template portraits: the user's face painted into a chosen photo with their LoRAs; the rest of it kept.

The template's face is found with the face backend, a square around it is inpainted at the model's native size
(diffusers' inpainting pipeline built from the loaded components, so no second UNet), colour-matched to the
template, and pasted back through a feathered mask: outside the mask the output is the template, pixel for pixel.
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from easyphoto_app import fusion
from easyphoto_app.errors import UserError
from easyphoto_app.faces.base import DetectedFace
from easyphoto_app.fusion import match_colour
from easyphoto_app.settings import GenerateConfig, PortraitConfig
from easyphoto_app.workspace import Workspace

MIN_FACE_PX = 64  # below this the face is upscaled so far that it paints as mush
FEATHER = 0.05  # the mask's soft edge: Gaussian sigma as a fraction of the crop's side
MAX_TEMPLATE_SIDE = 4096  # larger templates are scaled to this (a 24-megapixel photo is 6000 px)
SAME_SIZE = 0.9  # faces at least this fraction of the largest one's size count as equally large
IGNORED_RED = (230, 40, 40)  # the preview's colour for boxes that are not faces


@dataclass
class Placement:
    """Where a portrait is painted: the chosen face and the square crop around it (x0, y0, side)."""

    faces: list[DetectedFace]  # the template's faces, left to right (false detections left out)
    index: int  # the chosen one
    box: tuple[int, int, int]
    note: str | None = None

    @property
    def face(self) -> DetectedFace:
        return self.faces[self.index]


def boxes_left_to_right(backend, rgb: np.ndarray) -> tuple[list[DetectedFace], list[DetectedFace]]:
    """The template's faces and, apart, the boxes the backend found but does not take for faces; each left to right."""
    boxes = sorted(backend.detect(rgb), key=lambda f: float(f.bbox[0]))
    return [f for f in boxes if f.ignored is None], [f for f in boxes if f.ignored is not None]


def faces_left_to_right(backend, rgb: np.ndarray) -> list[DetectedFace]:
    return boxes_left_to_right(backend, rgb)[0]


def main_face(faces: list[DetectedFace]) -> int:
    """The largest face; among those about as large (SAME_SIZE), the one the detector is surest of."""
    largest = max(f.size for f in faces)
    return max((i for i, f in enumerate(faces) if f.size >= SAME_SIZE * largest), key=lambda i: faces[i].score)


def choose_face(faces: list[DetectedFace], index: int) -> tuple[int, str | None]:
    """The face at `index` (0 = left-most), or the main face when index < 0 (and a note when there were several)."""
    if not faces:
        raise UserError("No face found in the template: choose a photo where one face is clearly visible.")
    if index >= len(faces):
        raise UserError(f"The template has {len(faces)} face(s); face index {index} does not exist "
                        f"(use 0 to {len(faces) - 1}, counted from the left).")
    if index >= 0:
        return index, None
    chosen = main_face(faces)
    if len(faces) == 1:
        return chosen, None
    return chosen, (f"The template has {len(faces)} faces; painted the largest (face {chosen} from the left, "
                    "counting from 0). Choose another with --face-index or in the Portrait tab.")


def square_around(face: DetectedFace, width: int, height: int, scale: float) -> tuple[int, int, int]:
    """A square of `scale` face widths centred on the face, moved (not cut) to stay inside the image."""
    x1, y1, x2, y2 = (float(v) for v in face.bbox)
    side = int(min(round(scale * max(x2 - x1, y2 - y1)), width, height))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    x0 = int(min(max(round(cx - side / 2), 0), width - side))
    y0 = int(min(max(round(cy - side / 2), 0), height - side))
    return x0, y0, side


def feathered_mask(face: DetectedFace, box: tuple[int, int, int], size: int) -> np.ndarray:
    """Alpha (0..1, float32, size x size) over the face and hair line, soft at its edge and exactly 0 near
    the crop's border, so pasting back leaves no seam and no pixel outside it changes."""
    import cv2

    x0, y0, side = box
    k = size / side
    x1, y1, x2, y2 = ((float(v) - o) * k for v, o in zip(face.bbox, (x0, y0, x0, y0)))
    w, h = x2 - x1, y2 - y1
    hard = np.zeros((size, size), np.float32)
    # The detectors' boxes run from the brows to the chin: reach up to the hair line and out to the ears.
    centre = (round((x1 + x2) / 2), round((y1 + y2) / 2 - 0.12 * h))
    cv2.ellipse(hard, centre, (round(0.62 * w), round(0.78 * h)), 0, 0, 360, 1.0, -1)
    sigma = FEATHER * size
    reach = int(np.ceil(3 * sigma))
    hard[:reach], hard[-reach:], hard[:, :reach], hard[:, -reach:] = 0, 0, 0, 0
    alpha = cv2.GaussianBlur(hard, (2 * reach + 1, 2 * reach + 1), sigma)
    alpha[alpha < 1 / 512] = 0.0  # the blur's reflected border leaves crumbs (up to 6e-4) at the crop's edge
    alpha[alpha > 1 - 1 / 512] = 1.0
    return alpha


def resize_square(img: np.ndarray, side: int) -> np.ndarray:
    import cv2

    shrink = img.shape[0] > side
    return cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LANCZOS4)


def paste(template: np.ndarray, patch: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """template with patch blended in through alpha at box; untouched wherever alpha is 0."""
    x0, y0, side = box
    out = template.copy()
    region = out[y0:y0 + side, x0:x0 + side].astype(np.float32)
    a = alpha[..., None]
    out[y0:y0 + side, x0:x0 + side] = np.clip(region * (1 - a) + patch.astype(np.float32) * a, 0, 255).round().astype(np.uint8)
    return out


def place(backend, rgb: np.ndarray, cfg: PortraitConfig) -> Placement:
    faces = faces_left_to_right(backend, rgb)
    index, note = choose_face(faces, cfg.face_index)
    if faces[index].size < MIN_FACE_PX:
        raise UserError(f"The face in the template is {faces[index].size:.0f} px; portraits need at least {MIN_FACE_PX} px "
                        "(shorter side of the face): use a larger photo or one taken closer.")
    box = square_around(faces[index], rgb.shape[1], rgb.shape[0], cfg.crop_scale)
    return Placement(faces, index, box, note)


def annotate(rgb: np.ndarray, faces: list[DetectedFace], chosen: int | None = None,
             ignored: list[DetectedFace] = ()) -> np.ndarray:
    """A preview: each face boxed and numbered from the left (the chosen one in green); boxes that are not taken
    for faces crossed out in red, unnumbered."""
    import cv2

    out = rgb.copy()
    thick = max(2, round(max(rgb.shape[:2]) / 400))
    for f in ignored:
        x1, y1, x2, y2 = (int(round(float(v))) for v in f.bbox)
        cv2.rectangle(out, (x1, y1), (x2, y2), IGNORED_RED, thick)
        cv2.line(out, (x1, y1), (x2, y2), IGNORED_RED, thick)
        cv2.line(out, (x1, y2), (x2, y1), IGNORED_RED, thick)
    for i, f in enumerate(faces):
        x1, y1, x2, y2 = (int(round(float(v))) for v in f.bbox)
        colour = (40, 200, 60) if i == chosen else (255, 190, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        cv2.putText(out, str(i), (x1, max(y1 - 2 * thick, 12)), cv2.FONT_HERSHEY_SIMPLEX, thick / 2, colour, thick)
    return out


# ----------------------------------------------------------------------------- templates folder


def resolve_template(ws: Workspace, spec: str | Path) -> Path:
    """A template file: a path, or the name of one in the data dir's templates/."""
    path = Path(spec)
    if path.is_file():
        return path
    kept = ws.templates_dir / path.name
    if kept.is_file():
        return kept
    raise UserError(f"Template {spec} not found (give a photo's path, or the name of one in {ws.templates_dir}).")


def load_template(path: Path) -> np.ndarray:
    from easyphoto_app.faces.images import BadImage, load_rgb, not_an_image

    why = not_an_image(path)
    if why:
        raise UserError(f"Template {Path(path).name}: {why}.")
    try:
        return load_rgb(path, max_side=MAX_TEMPLATE_SIDE)
    except BadImage as exc:
        raise UserError(f"Template {Path(path).name}: {exc}.") from None


def add_template(ws: Workspace, source: Path, backend) -> Path:
    """Keep an uploaded template in templates/ once it is checked as painting checks it (an image, with a face
    large enough to paint): a refused one is never kept. Never overwrites another."""
    from easyphoto_app.faces.images import sanitize_name
    from easyphoto_app.workspace import atomic_path

    place(backend, load_template(source), PortraitConfig())
    name = Path(sanitize_name(Path(source).name))
    target, n = ws.templates_dir / name, 1
    while target.exists():
        target, n = ws.templates_dir / f"{name.stem}-{n}{name.suffix}", n + 1
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target


def list_templates(ws: Workspace) -> list[Path]:
    folder = ws.templates_dir
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


def delete_template(ws: Workspace, name: str) -> None:
    path = ws.templates_dir / Path(name).name
    if not path.is_file():
        raise UserError(f"No template named {name!r}.")
    path.unlink()


# ----------------------------------------------------------------------------- painting


def inpaint_pipeline(pipe):
    """The family's inpainting pipeline over the loaded components (no second UNet), made once per loaded pipeline.
    A plain (4-channel) UNet inpaints by re-noising the unmasked latents each step."""
    from easyphoto_app.families import of_pipeline, pipeline_class
    from easyphoto_app.models import pipeline_over

    return pipeline_over(pipe, ("inpaint",), lambda: pipeline_class(of_pipeline(pipe), "inpaint").from_pipe(pipe))


@dataclass
class Candidate:
    image: np.ndarray
    seed: int
    score: object | None  # faces.likeness.Score, None without a likeness scorer


@dataclass
class Portraits:
    paths: list[Path] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    likeness: list[float | None] = field(default_factory=list)  # as written; all None when not scored
    parameters: list[str] = field(default_factory=list)
    seconds: float = 0.0
    face_index: int = 0
    faces: int = 0
    box: tuple[int, int, int] = (0, 0, 0)  # the square painted: x0, y0, side
    notes: list[str] = field(default_factory=list)

    def captions(self) -> list[str]:
        """Rank, seed and the likeness written into each file, best first."""
        from easyphoto_app.generate import caption

        return [caption(params, f"#{n}", f"seed {seed}")
                for n, (params, seed) in enumerate(zip(self.parameters, self.seeds), 1)]


def _painting_steps(gen: GenerateConfig, strength: float) -> int:
    if not 0 < strength <= 1:
        raise UserError(f"Strength must be above 0 and at most 1 (got {strength:g}).")
    steps = int(gen.steps * strength)
    if steps < 1:
        raise UserError(f"{gen.steps} steps at strength {strength:g} paint nothing: raise the steps or the strength.")
    return steps


@dataclass
class Plan:
    """Everything checked and computed before the model is needed (a refusal comes before a model load)."""

    gen: GenerateConfig
    cfg: PortraitConfig
    user: str
    template: Path
    prompt: str
    loras: list
    rgb: np.ndarray
    spot: Placement
    control: Path | None = None  # the ControlNet's folder when structure control is on
    sources: list = field(default_factory=list)  # the user's faces that fusion may take (fusion.Source)


def plan(ws: Workspace, gen: GenerateConfig, cfg: PortraitConfig, user: str, template: Path, backend,
         use_rl: bool = True, device: str = "cpu") -> Plan:
    from easyphoto_app.generate import choose_loras, default_prompt, parse_lora_tags

    _painting_steps(gen, cfg.strength)
    text, tags = parse_lora_tags(gen.prompt or default_prompt(gen.style))
    loras = choose_loras(ws, user, tags, gen, use_rl)
    rgb = load_template(template)
    spot = place(backend, rgb, cfg)
    control = None
    if cfg.controlnet:
        from easyphoto_app.controlnet import ensure_controlnet

        control = ensure_controlnet(device)
    sources = fusion.user_sources(ws, user, backend) if cfg.fusion else []
    return Plan(gen, cfg, user, Path(template), text, loras, rgb, spot, control, sources)


def in_square(spot: Placement, size: int) -> np.ndarray:
    """The chosen face's landmarks in the painted square, scaled to size x size."""
    x0, y0, side = spot.box
    return (np.asarray(spot.face.kps, np.float32) - (x0, y0)) * (size / side)


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Most alike first; candidates without a score (no face, no recognizer) last, in seed order."""
    def key(c: Candidate) -> float:
        return 1.0 if c.score is None or c.score.likeness is None else -c.score.likeness

    return sorted(candidates, key=key)


def paint(pipe, model, ws: Workspace, job: Plan, progress=None, should_stop=None) -> Portraits:
    """job.cfg.num candidates (seeds seed, seed+1, ...) of the user's face in the template, saved best first."""
    import torch
    from PIL import Image

    from easyphoto_app.faces.likeness import scorer_or_none
    from easyphoto_app.generate import apply_loras, prompt_note, run_pipeline, set_scheduler
    from easyphoto_app.models import native_resolution

    gen, cfg, spot = job.gen, job.cfg, job.spot
    steps = _painting_steps(gen, cfg.strength)
    size = native_resolution(model, gen.width)
    x0, y0, side = spot.box
    crop = resize_square(job.rgb[y0:y0 + side, x0:x0 + side], size)
    source, not_fused = fusion.pick(spot.face, job.sources) if cfg.fusion else (None, None)
    image = fusion.fuse(crop, in_square(spot, size), source) if source else crop
    alpha_small, alpha = feathered_mask(spot.face, spot.box, size), feathered_mask(spot.face, spot.box, side)
    mask = Image.fromarray(((alpha_small > 0) * 255).astype(np.uint8))
    set_scheduler(pipe, gen.scheduler)
    apply_loras(pipe, job.loras)  # fused into the shared UNet and text encoder
    # A plain (4-channel) UNet never reads the masked image's latents; handing the pipeline any 4-channel tensor
    # spares it a VAE encoding per candidate (seconds on a CPU).
    painter, control = inpaint_pipeline(pipe), {"masked_image_latents": torch.zeros(1, 4, size // pipe.vae_scale_factor, size // pipe.vae_scale_factor)}
    if job.control:
        from easyphoto_app.controlnet import canny_edges, control_pipeline

        painter = control_pipeline(pipe, job.control)
        control = {"control_image": Image.fromarray(canny_edges(image)), "controlnet_conditioning_scale": cfg.control_weight}
    set_scheduler(painter, gen.scheduler)
    scorer = scorer_or_none(ws, job.user)
    notes = [n for n in (spot.note, prompt_note(pipe.tokenizer, job.prompt)) if n]
    if not_fused:
        notes.append(f"Face {spot.index} of the template was not fused with {job.user}'s own face: {not_fused}. "
                     "It was painted by the LoRAs alone.")
    if scorer is None:
        notes.append("No likeness scores: this user's photos were checked without a face recognizer.")
    base_seed = cfg.seed if cfg.seed >= 0 else random.randrange(2**31)
    start, candidates = time.perf_counter(), []
    for i in range(cfg.num):
        seed = base_seed + i
        painted = run_pipeline(painter, i * steps, cfg.num * steps, progress, should_stop,
                               "the number of candidates or the steps",
                               prompt=job.prompt, negative_prompt=gen.negative_prompt or None, image=Image.fromarray(image),
                               mask_image=mask, strength=cfg.strength, num_inference_steps=gen.steps,
                               guidance_scale=gen.cfg, width=size, height=size,
                               generator=torch.Generator("cpu").manual_seed(seed), **control)
        if should_stop and should_stop():
            break
        patch = resize_square(match_colour(np.asarray(painted.convert("RGB")), crop, alpha_small), side)
        if source and cfg.fusion_weight > 0:  # the person's eyes, nose and mouth again, over what the model painted
            patch = fusion.fuse(patch, in_square(spot, side), source, cfg.fusion_weight)
        out = paste(job.rgb, patch, alpha, spot.box)
        candidates.append(Candidate(out, seed, scorer.score(out[y0:y0 + side, x0:x0 + side]) if scorer else None))
    result = save_ranked(ws, job, model, rank(candidates))
    result.notes = notes
    result.seconds = time.perf_counter() - start
    return result


def save_ranked(ws: Workspace, job: Plan, model, candidates: list[Candidate]) -> Portraits:
    from PIL import Image

    from easyphoto_app.generate import likeness_fields, likeness_value, save_with_parameters

    result = Portraits(face_index=job.spot.index, faces=len(job.spot.faces), box=job.spot.box)
    folder = ws.outputs_dir(job.user) / date.today().isoformat()
    for n, c in enumerate(candidates, 1):
        extra = (f"Denoising strength: {job.cfg.strength:g}", f"Template: {job.template.name}",
                 f"Template face: {job.spot.index}", *likeness_fields(c.score))
        if job.control:  # as A1111's ControlNet extension writes it
            from easyphoto_app.controlnet import CANNY_REPO

            extra += (f'ControlNet 0: "Module: canny, Model: {CANNY_REPO.split("/")[1]}, Weight: {job.cfg.control_weight:g}"',)
        stem = f"{time.strftime('%H%M%S')}-portrait{n}-{c.seed}"
        path, params = save_with_parameters(Image.fromarray(c.image), folder, stem, job.prompt, job.loras, job.gen,
                                            c.seed, model, extra)
        result.paths.append(path)
        result.seeds.append(c.seed)
        result.parameters.append(params)
        result.likeness.append(likeness_value(c.score))
    return result
