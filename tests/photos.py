"""Real photos that packages ship, and the variants the tests make from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def insightface_image(name: str) -> Path:
    import insightface

    return Path(insightface.__file__).parent / "data" / "images" / name


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def close_up() -> np.ndarray:
    """A face that fills the frame: the astronaut's face cut 10 px inside dlib's box of it (179, 83, 266, 170),
    brows to chin, at 3x. dlib finds no face in it as it is."""
    import cv2

    return cv2.resize(astronaut()[93:160, 189:256], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)


def save(arr_or_img, path: Path, **kwargs) -> Path:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    img.save(path, **kwargs)
    return path


def astronaut_set(folder: Path) -> list[Path]:
    """Several photos of the same face. Crops, light and small turns of one photo are duplicates to a real
    recognizer (dlib cosine 0.998-0.999, and alignment undoes them for the pixel hash); the mirrored and
    perspective-turned looks are distinct photos to both (cosine 0.980-0.992, hash distance 13-37)."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    a = astronaut()
    variants = {
        "astro_full.jpg": a,
        "astro_crop.png": a[10:420, 60:440],
        "astro_bright.webp": np.clip(a.astype(int) * 1.15 + 10, 0, 255).astype(np.uint8),
        "astro_rot.jpg": cv2.warpAffine(
            a, cv2.getRotationMatrix2D((225, 110), 6, 1.0), (512, 512), borderMode=cv2.BORDER_REFLECT
        ),
        "astro_big.jpg": cv2.resize(a[0:300, 100:400], (900, 900), interpolation=cv2.INTER_CUBIC),
        "astro_mirror.jpg": np.ascontiguousarray(a[:, ::-1]),
        "astro_turn.jpg": _turned(a),
        "astro_turn_mirror.jpg": np.ascontiguousarray(_turned(a)[:, ::-1]),
    }
    return [
        save(img, folder / name, quality=92) if name.endswith(".jpg") else save(img, folder / name)
        for name, img in variants.items()
    ]


def distinct_looks(img: np.ndarray) -> dict[str, np.ndarray]:
    """Ten looks of one photo that a recognizer may take for distinct photos (the head turned a little and more,
    each way, and each of those mirrored): a photo set for a person who has one photo. Crops and light changes alone
    would be duplicates (cosine > 0.995) and rightly dropped."""
    looks = {}
    for k in (0.08, -0.08, 0.16, -0.16):
        looks[f"turn{k:+.2f}"] = _turned(img, k)
    looks["plain"] = img
    for name in list(looks):
        looks[f"{name}_mirror"] = np.ascontiguousarray(looks[name][:, ::-1])
    return looks


def _turned(img: np.ndarray, k: float = 0.12) -> np.ndarray:
    """A perspective warp, as if the head had turned a little."""
    import cv2

    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = (
        np.float32([[0, 0], [w, k * h], [w, h - k * h], [0, h]])
        if k >= 0
        else np.float32([[0, -k * h], [w, 0], [w, h], [0, h + k * h]])
    )
    return cv2.warpPerspective(img, cv2.getPerspectiveTransform(src, dst), (w, h), borderMode=cv2.BORDER_REFLECT)


def exif_rotated(path: Path, src: np.ndarray) -> Path:
    """The image stored sideways with an EXIF tag saying 'rotate back' (as phones do)."""
    img = Image.fromarray(np.rot90(src, k=1))  # stored turned 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    img.save(path, exif=exif, quality=92)
    return path


def bad_files(folder: Path) -> dict[str, Path]:
    """Photos that must be rejected, each for its own reason."""
    import cv2
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    a = astronaut()
    tiny_face = cv2.resize(a, (200, 200), interpolation=cv2.INTER_AREA)  # face about 40 px
    canvas = np.full((600, 600, 3), 200, np.uint8)
    canvas[200:400, 200:400] = tiny_face
    full = folder / "full.jpg"
    save(a, full, quality=92)
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    full.unlink()
    return {
        "cat": save(data.chelsea(), folder / "cat.jpg"),
        "coffee": save(data.coffee(), folder / "coffee.png"),
        "blurred": save(cv2.GaussianBlur(a, (0, 0), 3), folder / "blurred.jpg"),  # dlib still finds it; sharpness 0.09
        "tiny": save(canvas, folder / "tiny_face.jpg"),
        "small": save(cv2.resize(a[60:190, 160:290], (40, 40), interpolation=cv2.INTER_AREA), folder / "small.png"),
        "small_far": save(cv2.resize(a, (48, 48), interpolation=cv2.INTER_AREA), folder / "small_far.png"),
        "empty": folder / "empty.jpg",
        "text": folder / "notes.jpg",
        "truncated": truncated,
    }


def scene(path: Path, size: tuple[int, int] = (1200, 900)) -> Path:
    """A template photo: the astronaut, scaled to the height, on a grey gradient of the given (width, height)."""
    import cv2

    w, h = size
    canvas = np.empty((h, w, 3), np.uint8)
    canvas[:] = np.linspace(40, 200, w)[None, :, None].astype(np.uint8)
    left = (w - h) // 2
    canvas[:, left : left + h] = cv2.resize(astronaut(), (h, h), interpolation=cv2.INTER_CUBIC)
    return save(canvas, path, quality=95)
