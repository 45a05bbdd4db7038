"""The gallery on PNGs written here: order, parameters, deleting only one's own images, the export zip. Fast."""

import csv
import io
import json
import re
import time
import zipfile

import photos
import pytest
from PIL import Image, PngImagePlugin

from easyphoto_app import gallery
from easyphoto_app.errors import UserError
from easyphoto_app.workspace import Workspace


def png(path, parameters=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    Image.new("RGB", (4, 4)).save(path, pnginfo=info)
    return path


@pytest.fixture
def ws(tmp_path):
    ws = Workspace(tmp_path)
    ws.user_dir("ann").mkdir(parents=True)
    out = ws.outputs_dir("ann")
    png(out / "2026-01-02" / "00001-7.png", "a, Seed: 7")
    png(out / "2026-01-02" / "00002-8.png", "b, Seed: 8")
    png(out / "2026-01-10" / "00001-9.png", "c, Seed: 9")
    png(out / "2026-01-10" / "00002-1.png")  # no parameters
    (out / "2026-01-10" / "notes.txt").write_text("not an image")
    png(ws.outputs_dir("bo") / "2026-01-03" / "00001-5.png", "bo's")
    return ws


def names(items):
    return [f"{it.date}/{it.path.name}" for it in items]


def test_images_are_listed_newest_day_first_newest_file_first_with_their_parameters(ws):
    items = gallery.list_images(ws, "ann")
    assert names(items) == [
        "2026-01-10/00002-1.png",
        "2026-01-10/00001-9.png",
        "2026-01-02/00002-8.png",
        "2026-01-02/00001-7.png",
    ]
    assert [it.parameters for it in items] == ["", "c, Seed: 9", "b, Seed: 8", "a, Seed: 7"]
    assert names(gallery.list_images(ws, "ann", "2026-01-02")) == ["2026-01-02/00002-8.png", "2026-01-02/00001-7.png"]
    assert gallery.dates(ws, "ann") == ["2026-01-10", "2026-01-02"]
    assert gallery.list_images(ws, "cy") == [] and gallery.dates(ws, "cy") == []


def test_parameters_of_a_jpeg_are_empty(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    assert gallery.read_parameters(tmp_path / "a.jpg") == ""


def test_an_image_is_deleted_only_from_its_owners_outputs(ws):
    mine = ws.outputs_dir("ann") / "2026-01-02" / "00001-7.png"
    theirs = ws.outputs_dir("bo") / "2026-01-03" / "00001-5.png"
    with pytest.raises(UserError, match="00001-5.png is not one of ann's images"):
        gallery.delete_image(ws, "ann", theirs)
    with pytest.raises(UserError, match="not one of ann's images"):
        gallery.delete_image(ws, "ann", ws.outputs_dir("ann") / ".." / "bo" / "2026-01-03" / "00001-5.png")
    assert theirs.exists()
    gallery.delete_image(ws, "ann", mine)
    gallery.delete_image(ws, "ann", mine)  # already gone: nothing to say
    assert not mine.exists()


def read_zip(path):
    with zipfile.ZipFile(path) as zf:
        return (
            {i.filename: i.compress_type for i in zf.infolist()},
            json.loads(zf.read("manifest.json")),
            list(csv.reader(io.StringIO(zf.read("manifest.csv").decode()))),
        )


def test_the_export_zip_holds_every_image_and_both_manifests(ws):
    before = time.strftime("%Y%m%d-%H%M%S")
    out = gallery.export_zip(ws, "ann")
    assert out.parent == ws.exports_dir and re.fullmatch(r"ann-\d{8}-\d{6}\.zip", out.name)
    assert before <= out.name[4:-4] <= time.strftime("%Y%m%d-%H%M%S")  # when it was made, sortable by name
    files, manifest, rows = read_zip(out)
    images = ["2026-01-10/00002-1.png", "2026-01-10/00001-9.png", "2026-01-02/00002-8.png", "2026-01-02/00001-7.png"]
    assert list(files) == images + ["manifest.json", "manifest.csv"]
    assert all(files[name] == zipfile.ZIP_STORED for name in images)
    assert manifest["user"] == "ann"
    with zipfile.ZipFile(out) as zf:  # indented for people opening it
        assert zf.read("manifest.json").decode() == json.dumps(manifest, indent=2)
    assert manifest["images"][1] == {"file": "2026-01-10/00001-9.png", "date": "2026-01-10", "parameters": "c, Seed: 9"}
    assert rows[0] == ["file", "date", "parameters"]
    assert rows[1:] == [[m["file"], m["date"], m["parameters"]] for m in manifest["images"]]
    assert [p.name for p in ws.exports_dir.iterdir()] == [out.name]


def test_an_export_of_chosen_images_holds_only_those(ws, tmp_path):
    chosen = ws.outputs_dir("ann") / "2026-01-02" / "00002-8.png"
    out = gallery.export_zip(ws, "ann", [chosen], out=tmp_path / "pick.zip")
    files, manifest, rows = read_zip(out)
    assert out == tmp_path / "pick.zip"
    assert list(files) == ["2026-01-02/00002-8.png", "manifest.json", "manifest.csv"] and len(rows) == 2
    with pytest.raises(UserError, match="not one of ann's images"):
        gallery.export_zip(ws, "ann", [ws.outputs_dir("bo") / "2026-01-03" / "00001-5.png"])


def test_an_export_with_nothing_to_export_says_what_to_do(ws):
    ws.user_dir("cy").mkdir(parents=True)
    with pytest.raises(UserError, match="'cy' has no generated images to export yet: generate some"):
        gallery.export_zip(ws, "cy")
    with pytest.raises(UserError, match="No user 'dan'"):
        gallery.export_zip(ws, "dan")
    assert not ws.exports_dir.exists()


@pytest.fixture(scope="module")
def astro_reference(tmp_path_factory):
    """A data dir whose user 'ann' has the astronaut's dlib embedding as her identity, and the astronaut photo."""
    from easyphoto_app.faces.dlib_backend import DlibBackend

    ws = Workspace(tmp_path_factory.mktemp("likeness"))
    ws.user_dir("ann").mkdir(parents=True)
    face = DlibBackend().analyze(photos.astronaut())[0]
    reference = {"backend": "dlib", "mean_embedding": face.embedding.tolist()}
    (ws.user_dir("ann") / "reference.json").write_text(json.dumps(reference))
    return ws


def astro_png(ws, name, parameters):
    path = ws.outputs_dir("ann") / "2026-01-02" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    Image.fromarray(photos.astronaut()).save(path, pnginfo=info)
    return next(it for it in gallery.list_images(ws, "ann") if it.path == path)


SETTINGS = "a portrait\nNegative prompt: blurry\nSteps: 4, Seed: 7, Size: 512x512"


def test_the_gallery_shows_the_likeness_written_into_an_image_and_never_scores_it_again(astro_reference):
    """The astronaut scores about 1 against her own face; what was written when an image was made is shown instead."""
    ws = astro_reference
    written = astro_png(ws, "a.png", f"{SETTINGS}, Face likeness: 0.12, Version: EasyPhoto 0.1.0")
    assert gallery.likeness_line(ws, "ann", written) == (
        "Likeness to ann: **0.12** (0 stranger, 0.5 threshold, "
        "1 as alike as their own photos; scored when it was made)."
    )
    assert gallery.caption(written) == "2026-01-02 · likeness 0.12"
    older = astro_png(ws, "b.png", f"{SETTINGS}, Face likeness: 0.188")  # portraits wrote 3 decimals before
    assert "**0.19**" in gallery.likeness_line(ws, "ann", older) and gallery.caption(older).endswith("likeness 0.19")
    no_face = astro_png(ws, "c.png", f"{SETTINGS}, Face likeness: none, Version: EasyPhoto 0.1.0")
    assert gallery.likeness_line(ws, "ann", no_face) == "Likeness to ann: none (no face found)."
    assert gallery.caption(no_face) == "2026-01-02 · likeness: no face found"


def test_an_image_with_no_likeness_written_is_scored_when_shown(astro_reference):
    ws = astro_reference
    unscored = astro_png(ws, "d.png", SETTINGS)
    line = gallery.likeness_line(ws, "ann", unscored)
    scored = (
        r"Likeness to ann: \*\*(0\.9\d|1\.00)\*\* "
        r"\(0 stranger, 0\.5 threshold, 1 as alike as their own photos; one face\)\."
    )
    assert re.fullmatch(scored, line), line  # the astronaut against her own face
    assert gallery.caption(unscored) == "2026-01-02"  # the grid reads, it does not score
    in_prompt = astro_png(ws, "e.png", "Face likeness: 0.5, at dusk\nNegative prompt: x\nSteps: 4, Seed: 7")
    assert "one face" in gallery.likeness_line(ws, "ann", in_prompt)  # the prompt's words are not a written number
    ws.user_dir("bo").mkdir(exist_ok=True)
    assert gallery.likeness_line(ws, "bo", unscored).startswith("No likeness: User 'bo' has no reference face yet")
