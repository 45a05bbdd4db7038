"""Gallery: list a user's images by date, read their parameters, delete, export as zip."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from easyphoto_app.errors import UserError
from easyphoto_app.generate import caption as image_caption
from easyphoto_app.generate import format_likeness, likeness_value, read_likeness
from easyphoto_app.workspace import Workspace, atomic_path


@dataclass
class Item:
    path: Path
    date: str
    parameters: str


def read_parameters(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return im.text.get("parameters", "") if hasattr(im, "text") else ""


def list_images(ws: Workspace, user: str, day: str | None = None) -> list[Item]:
    root = ws.outputs_dir(user)
    if not root.is_dir():
        return []
    days = [root / day] if day else sorted((p for p in root.iterdir() if p.is_dir()), reverse=True)
    items = []
    for d in days:
        for png in sorted(d.glob("*.png"), reverse=True):
            items.append(Item(png, d.name, read_parameters(png)))
    return items


def caption(item: Item) -> str:
    """The grid's caption: the image's date and the likeness written into it (if any)."""
    return image_caption(item.parameters, item.date)


def likeness_line(ws: Workspace, user: str, item: Item) -> str:
    """One sentence for an image's detail view: the likeness written when it was made. Only an image with
    none written (made before likeness was written, or without a recognizer) is scored, here and now."""
    from easyphoto_app.faces.likeness import SCALE_WORDS  # noqa: PLC0415 - start-up (numpy)

    written, value = read_likeness(item.parameters)
    why = "scored when it was made"
    if not written:
        try:
            value, why = _score_now(ws, user, item.path)
        except UserError as exc:
            return f"No likeness: {exc}"
    if value is None:
        return f"Likeness to {user}: none (no face found)."
    return f"Likeness to {user}: **{format_likeness(value)}** ({SCALE_WORDS}; {why})."


def _score_now(ws: Workspace, user: str, path: Path) -> tuple[float | None, str]:
    from PIL import Image

    from easyphoto_app.faces.likeness import scorer_for  # noqa: PLC0415 - start-up (numpy)

    scorer = scorer_for(ws, user)
    with Image.open(path) as img:
        score = scorer.score(img)
    return likeness_value(score), score.reason


def dates(ws: Workspace, user: str) -> list[str]:
    root = ws.outputs_dir(user)
    return sorted((p.name for p in root.iterdir() if p.is_dir()), reverse=True) if root.is_dir() else []


def _inside_outputs(ws: Workspace, user: str, path: Path) -> Path:
    path = Path(path).resolve()
    try:
        path.relative_to(ws.outputs_dir(user).resolve())
    except ValueError:
        raise UserError(f"{path.name} is not one of {user}'s images.") from None
    return path


def delete_image(ws: Workspace, user: str, path: Path) -> None:
    _inside_outputs(ws, user, path).unlink(missing_ok=True)


def manifest_csv(items: list[Item]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["file", "date", "parameters"])
    for it in items:
        writer.writerow([f"{it.date}/{it.path.name}", it.date, it.parameters])
    return buf.getvalue()


def export_zip(ws: Workspace, user: str, paths: list[Path] | None = None, out: Path | None = None) -> Path:
    """Zip the chosen images (default: all of the user's) with manifest.json and manifest.csv."""
    if not ws.outputs_dir(user).is_dir():
        ws.require_user(user)
    items = list_images(ws, user)
    if paths is not None:
        wanted = {_inside_outputs(ws, user, p) for p in paths}
        items = [it for it in items if it.path.resolve() in wanted]
    if not items:
        raise UserError(f"'{user}' has no generated images to export yet: generate some on the Generate tab first.")
    out = Path(out) if out else ws.exports_dir / f"{user}-{time.strftime('%Y%m%d-%H%M%S')}.zip"
    manifest = [{"file": f"{it.date}/{it.path.name}", "date": it.date, "parameters": it.parameters} for it in items]
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
            for it, row in zip(items, manifest):
                zf.write(it.path, arcname=row["file"])
            zf.writestr("manifest.json", json.dumps({"user": user, "images": manifest}, indent=2))
            zf.writestr("manifest.csv", manifest_csv(items))
    return out
