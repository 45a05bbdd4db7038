"""Photos -> accepted face crops, reject reasons and the reference face (faces.json).

Every run re-checks all of a user's photos, so faces.json always matches the
files on disk. Two passes: first each photo's faces are found; then the set's
identity (`base.identity_of` over the clear single-face photos) decides which face
of a group photo is the person, and who is someone else. A backend that cannot
tell people apart (the offline fallback) skips both and says so.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from easyphoto_app.errors import UserError
from easyphoto_app.faces import get_backend, quality, recognizer_missing
from easyphoto_app.faces.base import DetectedFace, FaceBackend, identity_of
from easyphoto_app.faces.images import BadImage, collect_files, load_rgb, not_an_image, sanitize_name
from easyphoto_app.settings import FaceConfig
from easyphoto_app.workspace import Workspace, atomic_path, atomic_write_json, sha256_file, unique_path

MIN_PHOTOS = 3
NO_IDENTITY = (
    "identity checks are off: no face recognizer could be loaded ({why}), so photos of other people "
    "are not caught and there is no likeness score. Run ./run.sh --install-only (or run.bat) to install dlib."
)


@dataclass
class PhotoResult:
    source: str
    accepted: bool = False
    reason: str | None = None
    crop: str | None = None
    scores: dict = field(default_factory=dict)
    faces_found: int = 0
    _face: DetectedFace | None = field(default=None, repr=False)
    _all: list = field(default_factory=list, repr=False)
    _rgb: np.ndarray | None = field(default=None, repr=False)
    _crop: np.ndarray | None = field(default=None, repr=False)
    _hash: int = field(default=0, repr=False)
    _twin: PhotoResult | None = field(default=None, repr=False)

    def reject(self, reason: str) -> None:
        self.accepted, self.reason = False, reason


@dataclass
class FacesRecord:
    backend: str
    photos: list[PhotoResult]
    reference: dict | None = None
    warning: str | None = None
    skipped: list = field(default_factory=list)  # files of this upload that were not kept, with the reason

    @property
    def accepted(self) -> list[PhotoResult]:
        return [p for p in self.photos if p.accepted]

    @property
    def accepted_count(self) -> int:
        return len(self.accepted)

    def to_json(self) -> dict:
        photos = [{k: v for k, v in asdict(p).items() if not k.startswith("_")} for p in self.photos]
        return {
            "backend": self.backend,
            "photos": photos,
            "reference": self.reference,
            "warning": self.warning,
            "skipped": self.skipped,
        }


def load_record(ws: Workspace, user: str) -> dict | None:
    path = ws.faces_dir(user) / "faces.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def load_reference(ws: Workspace, user: str) -> dict:
    """The reference crop path, its embedding, the set's mean embedding and every accepted face's embedding
    ("faces": what likeness is measured against)."""
    path = ws.user_dir(user) / "reference.json"
    if not path.exists():
        raise UserError(
            f"User '{user}' has no reference face yet: add photos on the Photos tab (or run 'prepare --user "
            f"{user} PHOTOS')."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def reference_faces(ws: Workspace, user: str, ref: dict, backend: FaceBackend) -> np.ndarray:
    """The embeddings of the user's accepted faces, one row each. A reference.json written before they were kept
    is upgraded once, from the accepted crops in faces/; where no face can be read from them, the set's mean
    embedding stands alone (the old reference)."""
    if "faces" not in ref:
        ref = _with_faces_from_crops(ws, user, ref, backend)
    rows = [f["embedding"] for f in ref.get("faces") or []] or [ref["mean_embedding"]]
    return np.asarray(rows, dtype=np.float32)


def _with_faces_from_crops(ws: Workspace, user: str, ref: dict, backend: FaceBackend) -> dict:
    photos = (load_record(ws, user) or {}).get("photos", [])
    faces = []
    for p in photos:
        path = ws.root / p["crop"] if p.get("accepted") and p.get("crop") else None
        found = backend.analyze(load_rgb(path)) if path is not None and path.is_file() else []
        if found:  # the crop is centred on the accepted face, which fills it most
            faces.append({"source": p["source"], "embedding": _rounded(max(found, key=lambda f: f.size).embedding)})
    if not faces:
        return ref
    ref = {**ref, "faces": faces}
    atomic_write_json(ws.user_dir(user) / "reference.json", ref)
    return ref


def _rounded(v) -> list[float]:
    return [round(float(x), 6) for x in v]


# ----------------------------------------------------------------------------- importing


def import_photos(ws: Workspace, user: str, files: list[Path]) -> tuple[list[str], list[dict]]:
    """Copy new files into photos/ under sanitised, unique names. Files that are not images and byte-identical
    copies are not kept; each is returned with the reason, so nothing is dropped without a word."""
    folder = ws.photos_dir(user)
    folder.mkdir(parents=True, exist_ok=True)
    known = {sha256_file(p): p.name for p in folder.iterdir() if p.is_file()}
    added, skipped = [], []
    for src in collect_files(files):
        why = not_an_image(src)
        digest = None if why else sha256_file(src)
        if digest in known:
            why = f"the same file as {known[digest]}, already added"
        if why:
            skipped.append({"source": src.name, "accepted": False, "reason": f"not kept: {why}"})
            continue
        target = unique_path(folder, sanitize_name(src.name))
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
        known[digest] = target.name
        added.append(target.name)
    return added, skipped


def remove_photos(ws: Workspace, user: str, names: list[str]) -> None:
    folder = ws.photos_dir(user)
    for name in names:
        target = folder / Path(name).name
        if not target.is_file():
            have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            raise UserError(f"No photo named {name!r} for '{user}' (photos: {', '.join(have) or 'none'}).")
        target.unlink()


# ----------------------------------------------------------------------------- analysis


def _analyze(backend: FaceBackend, path: Path, cfg: FaceConfig) -> PhotoResult:
    result = PhotoResult(source=path.name)
    try:
        rgb = load_rgb(path, cfg.max_side)
    except BadImage as exc:
        result.reject(f"unusable file: {exc}")
        return result
    result._rgb = rgb
    result._all = backend.analyze(rgb)
    result.faces_found = len(result._all)
    small = _small_photo(rgb.shape, cfg)
    if not result._all:
        if small:
            result.reject(f"no face found; the photo is too small: {small}")
        elif quality.sharpness(rgb) < cfg.min_sharpness / 2:
            result.reject("no face found; the photo is too blurry")
        else:
            result.reject("no face found (use a photo where the face is clearly visible, looking at the camera)")
    return result


def _small_photo(shape, cfg: FaceConfig) -> str | None:
    """The advice when the photo itself has too few pixels: even a face filling it, with the crop's context around,
    would be smaller than min_face_px, so a closer photo of this size cannot help. None for a photo large enough."""
    h, w = shape[:2]
    if min(h, w) >= quality.CONTEXT * cfg.min_face_px:
        return None
    return f"use a larger photo (more pixels; this one is only {w}x{h} px)"


def _main_face(faces: list[DetectedFace], shape) -> DetectedFace:
    """Largest and most central (never simply the left-most)."""
    h, w = shape[:2]

    def weight(f: DetectedFace) -> float:
        cx, cy = f.center
        off = ((cx - w / 2) ** 2 + (cy - h / 2) ** 2) ** 0.5 / max(w, h)
        return f.size * (1.0 - off)

    return max(faces, key=weight)


def _set_identity(results: list[PhotoResult], backend: FaceBackend) -> np.ndarray | None:
    """The identity of the main faces of single-face photos (else of every photo's main face)."""
    single = [r._face.embedding for r in results if r._face is not None and r.faces_found == 1]
    pool = single or [r._face.embedding for r in results if r._face is not None]
    return identity_of(pool, backend.same_person_threshold) if pool else None


def _choose_faces(results: list[PhotoResult], backend: FaceBackend) -> None:
    for r in results:
        if r._all:
            r._face = _main_face(r._all, r._rgb.shape)
    if not backend.identifies_people:
        return
    identity = _set_identity(results, backend)
    if identity is not None:  # group photos: the face that looks like the rest of the set, wherever it stands
        for r in results:
            if len(r._all) > 1:
                r._face = max(r._all, key=lambda f: float(f.embedding @ identity))


def _score(r: PhotoResult, cfg: FaceConfig, backend: FaceBackend) -> None:
    crop = quality.align_crop(r._rgb, r._face, cfg.crop_size)
    core = quality.face_region(crop)
    r.scores = {
        "face_px": round(r._face.size, 1),
        "sharpness": round(quality.sharpness(core), 3),
        "exposure": round(quality.exposure(core), 3),
        "frontal": round(quality.frontalness(r._face, core), 3),
        "detector": round(r._face.score, 3),
    }
    r._crop = crop
    r._hash = quality.dhash(core)


def _decide(results: list[PhotoResult], cfg: FaceConfig, backend: FaceBackend) -> None:
    candidates = []
    for r in results:
        if r._face is None:
            continue
        _score(r, cfg, backend)
        if r.scores["sharpness"] < cfg.min_sharpness:
            r.reject(f"face too blurry (sharpness {r.scores['sharpness']:.2f} < {cfg.min_sharpness})")
        elif r.scores["face_px"] < cfg.min_face_px:
            advice = _small_photo(r._rgb.shape, cfg) or "use a closer photo"
            r.reject(f"face too small ({r.scores['face_px']:.0f} px; needs at least {cfg.min_face_px} px): {advice}")
        else:
            r.accepted = True
            candidates.append(r)
    if not candidates:
        return
    kept: list[PhotoResult] = []
    for r in sorted(candidates, key=lambda r: -r.scores["sharpness"]):
        twin = next(
            (
                k
                for k in kept
                if quality.hamming(k._hash, r._hash) <= 4
                or float(k._face.embedding @ r._face.embedding) > backend.duplicate_threshold
            ),
            None,
        )
        if twin is not None:
            r.reject(f"duplicate of {twin.source}")
            r._twin = twin
        else:
            kept.append(r)
    if not backend.identifies_people:
        for r in kept[cfg.keep :]:
            r.reject(f"more than {cfg.keep} photos: the sharpest are kept")
        return
    threshold = cfg.min_similarity or backend.same_person_threshold
    identity = identity_of([r._face.embedding for r in candidates], threshold)  # duplicates still vote
    for r in candidates:
        r.scores["similarity"] = round(float(r._face.embedding @ identity), 4)
        r.scores["likeness"] = round(backend.likeness(r.scores["similarity"]), 3)
    for r in list(kept):
        if r.scores["similarity"] < threshold:
            r.reject(
                f"looks like a different person (likeness {r.scores['likeness']:.2f}; "
                f"similarity {r.scores['similarity']:.3f} < {threshold:.3f})"
            )
            kept.remove(r)
    kept.sort(key=lambda r: -r.scores["similarity"])
    for r in kept[cfg.keep :]:
        r.reject(f"not among the {cfg.keep} most alike faces")
    for r in candidates:  # a duplicate of a photo that was rejected after all shares its fate, and says why
        if r._twin is not None and not r._twin.accepted:
            r.reject(f"duplicate of {r._twin.source}, which was rejected too: {r._twin.reason}")


def _reference(results: list[PhotoResult]) -> PhotoResult | None:
    """The most alike and frontal accepted face (the sharpest frontal one without identity)."""
    accepted = [r for r in results if r.accepted]
    key = lambda r: r.scores.get("similarity", r.scores["sharpness"]) * max(r.scores["frontal"], 0.05)  # noqa: E731
    return max(accepted, key=key) if accepted else None


# ----------------------------------------------------------------------------- entry


def prepare(
    ws: Workspace,
    user: str,
    new_files: list[Path],
    cfg: FaceConfig,
    remove: list[str] | None = None,
    progress=None,
    backend: FaceBackend | None = None,
) -> FacesRecord:
    if remove:
        remove_photos(ws, user, remove)
    _, skipped = import_photos(ws, user, new_files)
    photos = sorted(p for p in ws.photos_dir(user).iterdir() if p.is_file()) if ws.photos_dir(user).is_dir() else []
    if not photos:
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped)
        raise UserError(
            f"No photos for '{user}' yet: add 5-20 photos of the person's face." + (f" ({reasons})" if reasons else "")
        )
    backend = backend or get_backend(cfg.backend, ws.root)
    done = 0

    def run(path):
        nonlocal done
        result = _analyze(backend, path, cfg)
        done += 1
        if progress:
            progress(done, len(photos))
        return result

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run, photos))
    _choose_faces(results, backend)
    _decide(results, cfg, backend)
    record = _write(ws, user, results, backend, skipped)
    if record.accepted_count == 0:
        reasons = "; ".join(f"{r.source}: {r.reason}" for r in results)
        raise UserError(f"No usable photo for '{user}': {reasons}")
    return record


def _write(
    ws: Workspace, user: str, results: list[PhotoResult], backend: FaceBackend, skipped: list[dict]
) -> FacesRecord:
    from PIL import Image

    folder = ws.faces_dir(user)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.jpg"):
        old.unlink()
    for r in results:
        if r.accepted:
            target = folder / f"{Path(r.source).stem}.jpg"
            with atomic_path(target) as tmp:
                Image.fromarray(r._crop).save(tmp, format="JPEG", quality=95)
            r.crop = str(target.relative_to(ws.root))
    record = FacesRecord(backend=backend.name, photos=results, skipped=skipped)
    warnings = []
    if record.accepted_count < MIN_PHOTOS:
        warnings.append(
            f"need at least {MIN_PHOTOS} usable photos to train (5-20 give the best likeness), "
            f"got {record.accepted_count}."
        )
    if not backend.identifies_people:
        warnings.append(NO_IDENTITY.format(why=recognizer_missing()))
    record.warning = " ".join(warnings) or None
    ref = _reference(results)
    if ref is not None:
        mean = identity_of([r._face.embedding for r in record.accepted], backend.same_person_threshold)
        ref_path = ws.user_dir(user) / "reference.jpg"
        with atomic_path(ref_path) as tmp:
            Image.fromarray(ref._crop).save(tmp, format="JPEG", quality=95)
        record.reference = {"source": ref.source, "crop": str(ref_path.relative_to(ws.root))}
        atomic_write_json(
            ws.user_dir(user) / "reference.json",
            {
                "backend": backend.name,
                "source": ref.source,
                "crop": str(ref_path.relative_to(ws.root)),
                "embedding": _rounded(ref._face.embedding),
                "mean_embedding": _rounded(mean),
                "faces": [{"source": r.source, "embedding": _rounded(r._face.embedding)} for r in record.accepted],
            },
        )
    else:
        (ws.user_dir(user) / "reference.json").unlink(missing_ok=True)
        (ws.user_dir(user) / "reference.jpg").unlink(missing_ok=True)
    atomic_write_json(folder / "faces.json", record.to_json())
    return record


def format_table(record: FacesRecord) -> str:
    lines = [f"backend: {record.backend}", f"{'photo':32s} {'result':9s} {'sim':>5s} {'sharp':>5s} {'px':>5s}  reason"]
    for p in record.photos:
        s = p.scores
        lines.append(
            f"{p.source[:32]:32s} {'accepted' if p.accepted else 'rejected':9s} "
            f"{s.get('similarity', float('nan')):5.2f} {s.get('sharpness', float('nan')):5.2f} "
            f"{s.get('face_px', 0):5.0f}  {p.reason or ''}"
        )
    for skip in record.skipped:
        lines.append(f"{skip['source'][:32]:32s} {'skipped':9s} {'':23s}  {skip['reason']}")
    if record.reference:
        lines.append(f"reference face: {record.reference['source']}")
    lines.append(f"{record.accepted_count} accepted, {len(record.photos) - record.accepted_count} rejected.")
    if record.warning:
        lines.append(f"warning: {record.warning}")
    return "\n".join(lines)
