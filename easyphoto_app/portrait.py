"""Template portraits: the user's face painted into a chosen photo with their LoRAs; the rest of it kept.

The template's face is found with the face backend, a square around it is inpainted at the model's native size
(diffusers' inpainting pipeline built from the loaded components, so no second UNet), colour-matched to the
template, and pasted back through a feathered mask: outside the mask the output is the template, pixel for pixel.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

# generate and likeness by module: the tests point run_pipeline and scorer_or_none elsewhere.
from easyphoto_app import fusion, generate, group, identity_adapter
from easyphoto_app.controlnet import CANNY_REPO, canny_edges, control_pipeline, ensure_controlnet
from easyphoto_app.demo_model import native_resolution
from easyphoto_app.errors import UserError
from easyphoto_app.faces import likeness
from easyphoto_app.faces.base import DetectedFace
from easyphoto_app.faces.images import BadImage, load_rgb, not_an_image, sanitize_name
from easyphoto_app.families import of_pipeline, pipeline_class
from easyphoto_app.fusion import match_colour
from easyphoto_app.generate import (
    caption,
    choose_loras,
    default_prompt,
    likeness_fields,
    likeness_value,
    parse_lora_tags,
    pick_seed,
    prompt_note,
    save_with_parameters,
    set_scheduler,
)
from easyphoto_app.loaded_model import LoadedModel
from easyphoto_app.settings import GenerateConfig, PortraitConfig
from easyphoto_app.workspace import Workspace, atomic_path, unique_path

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
        raise UserError(
            f"The template has {len(faces)} face(s); face index {index} does not exist "
            f"(use 0 to {len(faces) - 1}, counted from the left)."
        )
    if index >= 0:
        return index, None
    chosen = main_face(faces)
    if len(faces) == 1:
        return chosen, None
    return chosen, (
        f"The template has {len(faces)} faces; painted the largest (face {chosen} from the left, "
        "counting from 0). Choose another with --face-index or in the Portrait tab."
    )


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
    region = out[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    a = alpha[..., None]
    out[y0 : y0 + side, x0 : x0 + side] = (
        np.clip(region * (1 - a) + patch.astype(np.float32) * a, 0, 255).round().astype(np.uint8)
    )
    return out


def place(backend, rgb: np.ndarray, cfg: PortraitConfig) -> Placement:
    faces = faces_left_to_right(backend, rgb)
    index, note = choose_face(faces, cfg.face_index)
    return place_at(faces, index, rgb, cfg, note)


def place_at(
    faces: list[DetectedFace], index: int, rgb: np.ndarray, cfg: PortraitConfig, note: str | None = None
) -> Placement:
    """The square painted around faces[index], once that face is known to be large enough to paint."""
    index, _ = choose_face(faces, index)
    if faces[index].size < MIN_FACE_PX:
        which = "The face in the template" if len(faces) == 1 else f"Face {index} of the template"
        raise UserError(
            f"{which} is {faces[index].size:.0f} px; portraits need at least {MIN_FACE_PX} px "
            "(shorter side of the face): use a larger photo or one taken closer."
        )
    box = square_around(faces[index], rgb.shape[1], rgb.shape[0], cfg.crop_scale)
    return Placement(faces, index, box, note)


def annotate(
    rgb: np.ndarray, faces: list[DetectedFace], chosen: int | None = None, ignored: list[DetectedFace] = ()
) -> np.ndarray:
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
    place(backend, load_template(source), PortraitConfig())
    target = unique_path(ws.templates_dir, sanitize_name(Path(source).name))
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


def inpaint_pipeline(loaded: LoadedModel):
    """The family's inpainting pipeline over the loaded components (no second UNet), made once per loaded model.
    A plain (4-channel) UNet inpaints by re-noising the unmasked latents each step."""
    pipe = loaded.pipe
    return loaded.derived(("inpaint",), lambda: pipeline_class(of_pipeline(pipe), "inpaint").from_pipe(pipe))


@dataclass
class Candidate:
    image: np.ndarray
    seed: int
    score: object | None  # faces.likeness.Score (the lowest of several people's), None without a likeness scorer
    scores: list = field(default_factory=list)  # each person's on their own face, as Plan.sitters lists them


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
    people: list[tuple[int, str]] = field(default_factory=list)  # (face, user) of each person painted, left to right
    mode: str = ""  # which mode the main person was painted in (identity_adapter.mode)

    def where(self) -> str:
        """Which faces were painted, in words: 'face 2', or 'face 0 (ben) and face 2 (astro)'."""
        if len(self.people) < 2:
            return f"face {self.face_index}"
        return " and ".join(f"face {face} ({who})" for face, who in self.people)

    def ranked_by(self) -> str:
        return "; ranked by the least alike person" if len(self.people) > 1 else ""

    def captions(self) -> list[str]:
        """Rank, seed and the likeness written into each file, best first."""
        return [
            caption(params, f"#{n}", f"seed {seed}")
            for n, (params, seed) in enumerate(zip(self.parameters, self.seeds), 1)
        ]


def _painting_steps(gen: GenerateConfig, strength: float) -> int:
    if not 0 < strength <= 1:
        raise UserError(f"Strength must be above 0 and at most 1 (got {strength:g}).")
    steps = int(gen.num_inference_steps * strength)
    if steps < 1:
        raise UserError(
            f"{gen.num_inference_steps} steps at strength {strength:g} paint nothing: raise the steps or the strength."
        )
    return steps


@dataclass
class Sitter:
    """One person painted into the template: on which face, with which LoRAs, from which of their own photos."""

    user: str
    spot: Placement
    loras: list
    sources: list = field(default_factory=list)  # fusion.Source


@dataclass
class Plan:
    """Everything checked and computed before the model is needed (a refusal comes before a model load)."""

    gen: GenerateConfig
    cfg: PortraitConfig
    user: str  # the main person (their outputs/ folder keeps the portraits)
    template: Path
    prompt: str
    loras: list
    rgb: np.ndarray
    spot: Placement
    control: Path | None = None  # the ControlNet's folder when structure control is on
    sources: list = field(default_factory=list)  # the user's faces that fusion may take (fusion.Source)
    others: list[Sitter] = field(default_factory=list)  # more people, each on a face of their own

    @property
    def sitters(self) -> list[Sitter]:
        return [Sitter(self.user, self.spot, self.loras, self.sources), *self.others]


def plan(
    ws: Workspace,
    gen: GenerateConfig,
    cfg: PortraitConfig,
    user: str,
    template: Path,
    backend,
    use_rl: bool = True,
    device: str = "cpu",
    others: dict[int, str] | None = None,
) -> Plan:
    """user on cfg.face_index (the largest when -1); each of others ({face: user}) on a face of their own."""
    _painting_steps(gen, cfg.strength)
    text, tags = parse_lora_tags(gen.prompt or default_prompt(gen.style))
    users = [ws.require_user(u) for u in [user, *(others or {}).values()]] if others else [user]
    rgb = load_template(template)
    spot = place(backend, rgb, cfg)
    spots = [spot, *(place_at(spot.faces, face, rgb, cfg) for face in (others or {}))]
    group.check_one_per_face([(s.index, u) for s, u in zip(spots, users)])
    sitters = [Sitter(u, s, choose_loras(ws, u, tags, gen, use_rl)) for u, s in zip(users, spots)]
    control = None
    if cfg.controlnet:
        control = ensure_controlnet(device)
    for sitter in sitters:
        sitter.sources = fusion.user_sources(ws, sitter.user, backend) if cfg.fusion else []
    main = sitters[0]
    return Plan(gen, cfg, main.user, Path(template), text, main.loras, rgb, spot, control, main.sources, sitters[1:])


def in_square(spot: Placement, size: int) -> np.ndarray:
    """The chosen face's landmarks in the painted square, scaled to size x size."""
    x0, y0, side = spot.box
    return (np.asarray(spot.face.kps, np.float32) - (x0, y0)) * (size / side)


def rank(candidates: list[Candidate]) -> list[Candidate]:
    """Most alike first; candidates without a score (no face, no recognizer) last, in seed order."""

    def key(c: Candidate) -> float:
        return 1.0 if c.score is None or c.score.likeness is None else -c.score.likeness

    return sorted(candidates, key=key)


@dataclass
class Sitting:
    """A sitter's face made ready to paint at the model's size: their photo to fuse in (or why none), the masks."""

    sitter: Sitter
    source: fusion.Source | None
    not_fused: str | None
    alpha_small: np.ndarray  # the paste mask at the model's size
    alpha: np.ndarray  # and at the square's own

    @classmethod
    def of(cls, sitter: Sitter, cfg: PortraitConfig, size: int) -> Sitting:
        spot = sitter.spot
        source, why = fusion.pick(spot.face, sitter.sources) if cfg.fusion else (None, None)
        return cls(
            sitter,
            source,
            why,
            feathered_mask(spot.face, spot.box, size),
            feathered_mask(spot.face, spot.box, spot.box[2]),
        )


def paint_face(face: Sitting, canvas: np.ndarray, size: int, weight: float, draw) -> np.ndarray | None:
    """canvas with face's square painted by draw(image, mask) (the pipeline's picture, None once stopped): fused
    with the person's photo before and, at weight, after; pasted back through the feathered mask."""
    from PIL import Image

    spot, source = face.sitter.spot, face.source
    x0, y0, side = spot.box
    crop = resize_square(canvas[y0 : y0 + side, x0 : x0 + side], size)
    image = fusion.fuse(crop, in_square(spot, size), source) if source else crop
    painted = draw(image, Image.fromarray(((face.alpha_small > 0) * 255).astype(np.uint8)))
    if painted is None:
        return None
    patch = resize_square(match_colour(np.asarray(painted.convert("RGB")), crop, face.alpha_small), side)
    if source and weight > 0:  # the person's eyes, nose and mouth again, over what the model painted
        patch = fusion.fuse(patch, in_square(spot, side), source, weight)
    return paste(canvas, patch, face.alpha, spot.box)


def paint(loaded: LoadedModel, ws: Workspace, job: Plan, progress=None, should_stop=None) -> Portraits:
    """job.cfg.num candidates (seeds seed, seed+1, ...), each with every sitter painted on their face with their own
    LoRAs, saved best first (by the least alike of the people)."""
    import torch
    from PIL import Image

    pipe, model, gen, cfg = loaded.pipe, loaded.model, job.gen, job.cfg
    steps = _painting_steps(gen, cfg.strength)
    size = native_resolution(model, gen.width)
    faces = [Sitting.of(s, cfg, size) for s in job.sitters]
    set_scheduler(pipe, gen.scheduler)
    loaded.use_loras(job.loras)  # fused into the shared UNet and text encoder
    people = {s.user: s.loras for s in job.sitters}
    identities = identity_adapter.prepare(loaded, ws, people, gen.ip_scale, gen.guidance_scale > 1)
    # A plain (4-channel) UNet never reads the masked image's latents; handing the pipeline any 4-channel tensor
    # spares it a VAE encoding per candidate (seconds on a CPU).
    latent = size // pipe.vae_scale_factor
    painter, control = inpaint_pipeline(loaded), {"masked_image_latents": torch.zeros(1, 4, latent, latent)}
    if job.control:
        painter = control_pipeline(loaded, job.control)
    set_scheduler(painter, gen.scheduler)
    scorers = {s.user: likeness.scorer_or_none(ws, s.user) for s in job.sitters}
    notes = [n for n in (job.spot.note, prompt_note(pipe.tokenizer, job.prompt)) if n] + _notes(faces, scorers)
    base_seed = pick_seed(cfg.seed)
    start, candidates, done = time.perf_counter(), [], 0

    def draw(image, mask, seed, user):
        nonlocal done
        extra = control
        if job.control:
            extra = {
                "control_image": Image.fromarray(canny_edges(image)),
                "controlnet_conditioning_scale": cfg.controlnet_conditioning_scale,
            }
        painted = generate.run_pipeline(
            painter,
            done * steps,
            cfg.num * len(faces) * steps,
            progress,
            should_stop,
            "the number of candidates or the steps",
            prompt=job.prompt,
            negative_prompt=gen.negative_prompt or None,
            image=Image.fromarray(image),
            mask_image=mask,
            strength=cfg.strength,
            num_inference_steps=gen.num_inference_steps,
            guidance_scale=gen.guidance_scale,
            width=size,
            height=size,
            generator=torch.Generator("cpu").manual_seed(seed),
            **extra,
            **(identities[user].call_kwargs(painter) if identities else {}),
        )
        done += 1
        return None if should_stop and should_stop() else painted

    for i in range(cfg.num):
        seed, out = base_seed + i, job.rgb
        for face in faces:
            loaded.use_loras(face.sitter.loras)  # unchanged for one person: nothing to do
            out = paint_face(
                face,
                out,
                size,
                cfg.fusion_weight,
                lambda image, mask, s=seed, u=face.sitter.user: draw(image, mask, s, u),
            )
            if out is None:
                break
        if out is None:
            break
        scores = [_score(scorers[f.sitter.user], out, f.sitter.spot.box) for f in faces]
        candidates.append(Candidate(out, seed, group.lowest(scores), scores))
    main = identities.get(job.user)
    more = (main.png_field(1 if job.control else 0),) if main else ()
    result = save_ranked(ws, job, model, rank(candidates), faces, more)
    result.notes, result.mode = notes, identity_adapter.mode(main, job.loras)
    result.seconds = time.perf_counter() - start
    return result


def _score(scorer, image: np.ndarray, box: tuple[int, int, int]):
    x0, y0, side = box
    return scorer.score(image[y0 : y0 + side, x0 : x0 + side]) if scorer else None


def _notes(faces: list[Sitting], scorers: dict) -> list[str]:
    notes = [
        f"Face {f.sitter.spot.index} of the template was not fused with {f.sitter.user}'s own face: "
        f"{f.not_fused}. It was painted by the LoRAs alone."
        for f in faces
        if f.not_fused
    ]
    unscored = [user for user, scorer in scorers.items() if scorer is None]
    if unscored:
        whose = "this user's" if len(scorers) == 1 else f"{' and '.join(unscored)}'s"
        notes.append(f"No likeness scores: {whose} photos were checked without a face recognizer.")
    return notes


def _fields(job: Plan, faces: list[Sitting], c: Candidate, more: tuple = ()) -> tuple[str, ...]:
    """A portrait's own PNG info fields: strength, template, who is where, fusion, likeness."""
    people = [(f.sitter.spot.index, f.sitter.user) for f in faces]
    where = (f"Template face: {job.spot.index}",) if len(faces) == 1 else (group.people_field(people),)
    unfused = sorted(f.sitter.spot.index for f in faces if f.source is None)
    each = (group.likenesses_field([p[0] for p in people], c.scores),) if len(faces) > 1 and c.score else ()
    extra = (
        f"Denoising strength: {job.cfg.strength:g}",
        f"Template: {job.template.name}",
        *where,
        group.fusion_field(job.cfg.fusion, job.cfg.fusion_weight, unfused, len(faces)),
        *likeness_fields(c.score),
        *each,
    )
    if job.control:  # as A1111's ControlNet extension writes it
        extra += (
            f'ControlNet 0: "Module: canny, Model: {CANNY_REPO.split("/")[1]}, '
            f'Weight: {job.cfg.controlnet_conditioning_scale:g}"',
        )
    return extra + more


def save_ranked(
    ws: Workspace, job: Plan, model, candidates: list[Candidate], faces: list[Sitting], more: tuple = ()
) -> Portraits:
    """The candidates saved best first; `more`: PNG info fields of the request (the identity adapter's)."""
    from PIL import Image

    people = sorted((f.sitter.spot.index, f.sitter.user) for f in faces)
    result = Portraits(face_index=job.spot.index, faces=len(job.spot.faces), box=job.spot.box, people=people)
    loras = list({lora.name: lora for f in faces for lora in f.sitter.loras}.values())  # each LoRA once
    folder = ws.outputs_dir(job.user) / date.today().isoformat()
    for n, c in enumerate(candidates, 1):
        stem = f"{time.strftime('%H%M%S')}-portrait{n}-{c.seed}"
        path, params = save_with_parameters(
            Image.fromarray(c.image),
            folder,
            stem,
            job.prompt,
            loras,
            job.gen,
            c.seed,
            model,
            _fields(job, faces, c, more),
        )
        result.paths.append(path)
        result.seeds.append(c.seed)
        result.parameters.append(params)
        result.likeness.append(likeness_value(c.score))
    return result
