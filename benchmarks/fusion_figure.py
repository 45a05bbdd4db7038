"""docs/fusion.png: what face fusion changes, from a portrait_likeness.py run. One row per template (a real photo of
someone else): the template's face | painted without fusion | with fusion, each with its dlib distance to the
held-out person's own photo (below 0.6: the same person to dlib).

usage: python benchmarks/portrait_likeness.py --people "Joe Biden" --strengths 0.45 --seeds 1 --keep KEEP > run.json
       python benchmarks/fusion_figure.py run.json [more.json] --keep KEEP [--out docs/fusion.png] [--with MODE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests"), str(ROOT / "scripts")]

CELL = 160  # pixels per picture
CAPTION = 34  # pixels of text under each
LABEL = 170  # the left column: whose face, on which template
HEADER = 46  # what the numbers mean


def square(path: Path, template: Path, index: int) -> np.ndarray:
    """The painted square of a portrait (as portrait.place chose it for the template), CELL px."""
    import cv2

    from easyphoto_app.faces import get_backend
    from easyphoto_app.faces.images import load_rgb
    from easyphoto_app.portrait import load_template, place
    from easyphoto_app.settings import PortraitConfig

    x0, y0, side = place(get_backend("dlib", None), load_template(template), PortraitConfig(face_index=index)).box
    rgb = load_rgb(path, 4096)
    return cv2.resize(rgb[y0 : y0 + side, x0 : x0 + side], (CELL, CELL), interpolation=cv2.INTER_AREA)


def rows_of(run: dict, keep: Path, with_mode: str) -> list[dict]:
    """Per person and template: the three pictures and their distances to the person."""
    from portrait_likeness import held_out, templates

    rows = []
    for person in run["people"]:
        name = person["person"]
        paths = {t: (p, i) for t, p, i in templates(name, held_out())}
        for template, (path, index) in paths.items():
            by_mode = {r["mode"]: r for r in person["portraits"] if r["template"] == template}
            kept = keep / name.replace(" ", "_")
            strength = by_mode["none"]["strength"]

            def painted(mode: str, kept=kept, template=template, strength=strength, path=path, index=index):
                folder = kept / f"{template.replace(' ', '_')}_{strength}_{mode}"
                return square(next(folder.glob("*.png")), path, index)

            rows.append(
                {
                    "label": f"{name}\non {template}",
                    "cells": [
                        (square(path, path, index), "template", person["template_to_user"][template]),
                        (painted("none"), "without fusion", by_mode["none"]["to_user"]),
                        (painted(with_mode), f"with fusion ({with_mode.split()[-1]})", by_mode[with_mode]["to_user"]),
                    ],
                }
            )
    return rows


def draw(rows: list[dict], out: Path) -> None:
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=15)
    width, height = LABEL + 3 * CELL, HEADER + len(rows) * (CELL + CAPTION)
    sheet = Image.new("RGB", (width, height), "white")
    pen = ImageDraw.Draw(sheet)
    pen.multiline_text(
        (8, 6),
        "Held-out people painted into photos of others on the built-in face model (strength "
        "0.45).\ndistance: dlib's, to the person's own photo; green below 0.6, the same person to dlib.",
        fill="black",
        font=font,
    )
    for r, row in enumerate(rows):
        top = HEADER + r * (CELL + CAPTION)
        pen.multiline_text((8, top + CELL // 2 - 20), row["label"], fill="black", font=font)
        for c, (img, what, dist) in enumerate(row["cells"]):
            left = LABEL + c * CELL
            sheet.paste(Image.fromarray(img), (left, top))
            shown = "no face" if dist is None else f"{dist:.2f}"
            good = dist is not None and dist < 0.6
            pen.text((left + 4, top + CELL + 2), what, fill="black", font=font)
            pen.text(
                (left + 4, top + CELL + 17), f"distance {shown}", fill=(0, 120, 0) if good else (160, 0, 0), font=font
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="portrait_likeness.py JSON outputs")
    ap.add_argument("--keep", type=Path, required=True, help="the folder given to portrait_likeness.py --keep")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "fusion.png")
    ap.add_argument("--with", dest="with_mode", default=None, help="the fused mode shown (default: the app's)")
    args = ap.parse_args()
    from easyphoto_app.settings import PortraitConfig

    mode = args.with_mode or f"before_after {PortraitConfig().fusion_weight:g}"  # the run may predate the default
    rows = [row for run_file in args.runs for row in rows_of(json.loads(run_file.read_text()), args.keep, mode)]
    draw(rows, args.out)
    print(args.out)


if __name__ == "__main__":
    main()
