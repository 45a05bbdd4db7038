import json
import shutil

import numpy as np
import pytest

import photos
from conftest import run_cli


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, astro_photos):
    """One prepare run over good photos, format variants, a group photo and the bad files."""
    base = tmp_path_factory.mktemp("faces")
    good = base / "good"
    good.mkdir()
    for p in astro_photos:
        shutil.copy(p, good / p.name)
    a = photos.astronaut()
    photos.exif_rotated(good / "astro_exif.jpg", a)
    photos.save(a, good / "astro_copy.png")
    from easyphoto_app.faces.images import load_rgb

    group = load_rgb(photos.insightface_image("t1.jpg"))
    group[250:410, 900:1050] = a[40:200, 150:300]  # the astronaut among five other people, not left-most
    photos.save(group, good / "group.jpg")
    shutil.copy(photos.insightface_image("Tom_Hanks_54745.png"), good / "hanks.png")
    bad = photos.bad_files(base / "bad")
    data = base / "data"
    r = run_cli(data, "prepare", "--user", "astro", str(good), *map(str, bad.values()))
    assert r.returncode == 0, r.stderr
    record = json.loads((data / "users" / "astro" / "faces" / "faces.json").read_text())
    return data, {p["source"]: p for p in record["photos"]}, record, r


def test_every_photo_has_a_verdict_and_no_traceback(prepared):
    data, by_name, record, r = prepared
    assert "Traceback" not in r.stderr + r.stdout
    assert all(p["accepted"] or p["reason"] for p in by_name.values())
    assert record["backend"] == "offline"


@pytest.mark.parametrize("name", ["astro_full.jpg", "astro_copy.png", "astro_bright.webp", "astro_exif.jpg"])
def test_astronaut_accepted_in_each_format_or_only_a_duplicate(prepared, name):
    p = prepared[1][name]
    assert p["accepted"] or p["reason"].startswith("duplicate of"), p


@pytest.mark.parametrize("name, reason", [
    ("cat.jpg", "no face"), ("coffee.png", "no face"), ("blurred.jpg", "blurry"), ("tiny_face.jpg", "too small"),
    ("empty.jpg", "empty file"), ("notes.jpg", "not an image"), ("truncated.jpg", "truncated"),
    ("hanks.png", "different person"),
])
def test_bad_photos_rejected_with_their_reason(prepared, name, reason):
    p = prepared[1][name]
    assert not p["accepted"] and reason in p["reason"], p


def test_group_photo_crops_the_person_of_the_set(prepared):
    data, by_name, _, _ = prepared
    g = by_name["group.jpg"]
    assert g["accepted"], g
    assert g["scores"]["similarity"] > 0.95  # the astronaut, not one of the five others


def test_reference_face_and_embeddings_saved(prepared):
    data, by_name, record, _ = prepared
    ref = json.loads((data / "users" / "astro" / "reference.json").read_text())
    assert by_name[ref["source"]]["accepted"] and (data / ref["crop"]).exists()
    assert len(ref["embedding"]) == len(ref["mean_embedding"]) > 100
    assert abs(np.linalg.norm(ref["mean_embedding"]) - 1) < 1e-3
    for p in record["photos"]:
        if p["accepted"]:
            from PIL import Image

            assert Image.open(data / p["crop"]).size == (512, 512)


@pytest.mark.parametrize("bad", ["../x", "a/b", ""])
def test_bad_user_id_exits_2_and_creates_nothing(tmp_path, astro_photos, bad):
    data = tmp_path / "data"
    r = run_cli(data, "prepare", "--user", bad, str(astro_photos[0]))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1
    assert not (data / "users").exists() and not (tmp_path / "x").exists()


def test_no_usable_photo_exits_2_with_reasons(tmp_path):
    bad = photos.bad_files(tmp_path / "bad")
    r = run_cli(tmp_path / "data", "prepare", "--user", "bob", str(bad["cat"]), str(bad["text"]))
    assert r.returncode == 2 and "No usable photo" in r.stderr and "cat.jpg: no face" in r.stderr


def test_remove_photo_updates_the_record(tmp_path, astro_photos):
    data = tmp_path / "data"
    assert run_cli(data, "prepare", "--user", "a", *map(str, astro_photos)).returncode == 0
    r = run_cli(data, "prepare", "--user", "a", "--remove", "astro_rot.jpg", "--json")
    assert r.returncode == 0, r.stderr
    sources = [p["source"] for p in json.loads(r.stdout[r.stdout.index("{"):])["photos"]]
    assert "astro_rot.jpg" not in sources and len(sources) == len(astro_photos) - 1


def test_huge_image_is_downscaled_on_load(tmp_path):
    import cv2

    from easyphoto_app.faces.images import load_rgb

    path = photos.save(cv2.resize(photos.astronaut(), (5000, 5000)), tmp_path / "huge.png")
    assert max(load_rgb(path, 2048).shape[:2]) == 2048


def test_odd_modes_become_rgb(tmp_path):
    from PIL import Image

    from easyphoto_app.faces.images import load_rgb

    img = Image.fromarray(photos.astronaut())
    for mode in ("L", "RGBA", "P", "CMYK", "I;16"):
        path = tmp_path / f"m_{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
        (img.convert("L").convert(mode) if mode == "I;16" else img.convert(mode)).save(path)
        arr = load_rgb(path)
        assert arr.dtype == np.uint8 and arr.shape[2] == 3, mode


def test_insightface_backend_runs_through_insightface_loading(tmp_path, astro_photos):
    """Tiny ONNX models with buffalo_l's signatures: the real insightface code path (model zoo routing,
    SCRFD decoding, ArcFace alignment) runs, and auto picks it over the offline backend."""
    import tiny_insightface

    data = tmp_path / "data"
    tiny_insightface.install_buffalo_stand_in(data)
    notes = tmp_path / "notes.jpg"
    notes.write_text("not a photo")
    r = run_cli(data, "prepare", "--user", "astro", *map(str, astro_photos), str(notes))
    assert r.returncode == 0, r.stderr
    record = json.loads((data / "users" / "astro" / "faces" / "faces.json").read_text())
    assert record["backend"] == "insightface"
    faces = [p for p in record["photos"] if p["source"] != "notes.jpg"]
    assert all(p["faces_found"] == 1 and p["scores"]["frontal"] == 1.0 for p in faces)  # from the 5 landmarks
    assert any(p["accepted"] for p in faces)
    ref = json.loads((data / "users" / "astro" / "reference.json").read_text())
    assert ref["backend"] == "insightface" and len(ref["embedding"]) == 512


def test_insightface_backend_asked_for_but_missing_says_where_to_put_it(tmp_path, astro_photos):
    r = run_cli(tmp_path / "data", "prepare", "--user", "a", "--backend", "insightface", str(astro_photos[0]),
                env={"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 2 and "det_10g.onnx" in r.stderr and str(tmp_path / "data") in r.stderr
