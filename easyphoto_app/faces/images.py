"""Loading user photos safely: EXIF orientation, odd modes, huge images, corrupt files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from easyphoto_app.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".heic", ".heif"}
MAX_PIXELS = 120_000_000  # beyond this a file is treated as a decompression bomb


class BadImage(UserError):
    """A photo that cannot be used; the message is the reason shown to the user."""


HEIC_MISSING = "HEIC photos need the optional pillow-heif package; convert it to JPEG or install pillow-heif."


def _register_heif() -> bool:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _is_heif(path: Path) -> bool:
    """By the bytes (an ISO media 'ftyp' box of a HEIF brand), not the name: phones and apps mislabel files."""
    with open(path, "rb") as fh:
        head = fh.read(12)
    return head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1")


def not_an_image(path: Path) -> str | None:
    """Why a file is not worth keeping as a photo (empty, not an image at all), or None. Damaged images are
    kept: the faces table then says what is wrong with them."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.stat().st_size == 0:
        return "empty file"
    if _is_heif(path):
        return None if _register_heif() else HEIC_MISSING
    try:
        with Image.open(path):
            return None
    except UnidentifiedImageError:
        return "not an image file (or an unsupported format)"
    except OSError:
        return None


def load_rgb(path: Path, max_side: int = 2048) -> np.ndarray:
    """An upright RGB uint8 array, downscaled so its longer side is at most max_side."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if path.stat().st_size and _is_heif(path) and not _register_heif():
        raise BadImage(HEIC_MISSING)
    if path.stat().st_size == 0:
        raise BadImage("empty file")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadImage(f"image too large ({im.width}x{im.height} px)")
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size, much faster
            im = ImageOps.exif_transpose(im)
            im = _to_rgb(im)
            im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8).copy()
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage("image too large (possible decompression bomb)") from None
    except UnidentifiedImageError:
        raise BadImage("not an image file (or an unsupported format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"damaged or truncated image ({exc})") from None


def _to_rgb(im):
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float32)
        arr = arr / max(float(arr.max()), 1.0) * 255.0
        im = Image.fromarray(arr.astype(np.uint8))
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def sanitize_name(name: str) -> str:
    """A safe file name that keeps the user's name recognisable."""
    stem, dot, suffix = Path(name).name.rpartition(".")
    if not dot:
        stem, suffix = suffix, ""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "photo"
    suffix = re.sub(r"[^A-Za-z0-9]", "", suffix).lower()
    return f"{stem[:80]}.{suffix}" if suffix else stem[:80]


def collect_files(paths: list[Path]) -> list[Path]:
    """Files given directly, plus the image files inside given folders (sorted)."""
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p} does not exist.")
    return files


def resize(img: np.ndarray, scale: float, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Scaled by `scale`, or to shape (h, w); area interpolation (for the detectors' and descriptors' copies)."""
    import cv2

    h, w = shape or (max(1, round(img.shape[0] * scale)), max(1, round(img.shape[1] * scale)))
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
