import json
import shutil

import numpy as np
import photos
import pytest
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
    photos.save(photos.close_up(), good / "astro_close.png")
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
    return data, {p["source"]: p for p in record["photos"] + record["skipped"]}, record, r  # skipped: not kept


def test_every_photo_has_a_verdict_and_no_traceback(prepared):
    data, by_name, record, r = prepared
    assert "Traceback" not in r.stderr + r.stdout
    assert all(p["accepted"] or p["reason"] for p in by_name.values())
    assert record["backend"] == "dlib"  # auto without insightface's models: the recognizer that installs with the app


@pytest.mark.parametrize("name", ["astro_full.jpg", "astro_copy.png", "astro_bright.webp", "astro_exif.jpg"])
def test_astronaut_accepted_in_each_format_or_only_a_duplicate(prepared, name):
    p = prepared[1][name]
    assert p["accepted"] or p["reason"].startswith("duplicate of"), p


@pytest.mark.parametrize(
    "name, reason",
    [
        ("cat.jpg", "no face"),
        ("coffee.png", "no face"),
        ("blurred.jpg", "blurry"),
        ("tiny_face.jpg", "too small"),
        ("tiny_face.jpg", "px): use a closer photo"),  # a big photo, the face far away
        ("small.png", "face too small"),
        ("small.png", "px): use a larger photo (more pixels; this one is only 40x40 px)"),
        (
            "small_far.png",
            "no face found; the photo is too small: use a larger photo (more pixels; this one is only 48x48 px)",
        ),
        ("empty.jpg", "empty file"),
        ("notes.jpg", "not an image"),
        ("truncated.jpg", "truncated"),
        ("hanks.png", "different person"),
    ],
)
def test_bad_photos_rejected_with_their_reason(prepared, name, reason):
    p = prepared[1][name]
    assert not p["accepted"] and reason in p["reason"], p


@pytest.mark.parametrize(
    "shape, small", [((40, 40), True), ((140, 2000), True), ((141, 141), False), ((600, 600), False)]
)
def test_a_closer_photo_is_advised_only_where_the_photo_could_hold_a_big_enough_face(shape, small):
    """min_face_px 64 with the crop's 2.2x context: a close-up needs a photo of at least 141 px a side."""
    from easyphoto_app.faces.prepare import _small_photo
    from easyphoto_app.settings import FaceConfig

    advice = _small_photo(shape, FaceConfig())
    assert (
        (advice == f"use a larger photo (more pixels; this one is only {shape[1]}x{shape[0]} px)")
        if small
        else advice is None
    )


def test_a_face_that_fills_the_frame_is_found(prepared):
    p = prepared[1]["astro_close.png"]
    assert p["faces_found"] == 1 and (p["accepted"] or p["reason"].startswith("duplicate of")), p


def test_a_face_that_fills_the_frame_is_found_where_it_is():
    """Found on a copy with a border around it; its box and landmarks are given in the close-up's own pixels."""
    from easyphoto_app.faces.dlib_backend import DlibBackend

    backend, close = DlibBackend(), photos.close_up()
    assert backend.detect(close) == []  # the detector alone misses it
    (found,) = backend.analyze(close)
    in_close_up = lambda *xy: (np.array(xy, np.float32).reshape(-1, 2) - [189, 93]) * 3  # noqa: E731
    box = in_close_up((179, 83), (266, 170)).ravel()  # dlib's box of her face in the whole photo
    assert np.abs(found.bbox - box).max() < 0.05 * (box[2] - box[0]), found.bbox  # reaches past the close-up: -30
    assert np.abs(found.kps[:3] - in_close_up((203.5, 102), (246, 104.5), (224, 135))).max() < 8  # eyes, nose


def test_edited_copies_of_one_photo_are_duplicates_of_the_one_kept(prepared):
    """Crops, light, small turns and format changes of one photo (from different files) are one photo to the app;
    a mirror image and a perspective turn are distinct photos."""
    by_name = prepared[1]
    looks = [
        "astro_full.jpg",
        "astro_crop.png",
        "astro_bright.webp",
        "astro_rot.jpg",
        "astro_big.jpg",
        "astro_copy.png",
        "astro_exif.jpg",
    ]
    kept = [n for n in looks if by_name[n]["accepted"]]
    assert len(kept) == 1, [(n, by_name[n]["reason"]) for n in looks]
    assert all(by_name[n]["reason"] == f"duplicate of {kept[0]}" for n in looks if n != kept[0])
    assert all(by_name[n]["accepted"] for n in ["astro_mirror.jpg", "astro_turn.jpg", "astro_turn_mirror.jpg"])


def test_dlib_sees_a_view_or_a_float_image_as_the_same_photo():
    """dlib reads the array's buffer as it is: a strided view (a mirror, every other pixel, an RGBA's RGB) or a
    float image must give the boxes and descriptors of the same pixels as a plain uint8 copy."""
    from easyphoto_app.faces.dlib_backend import DlibBackend

    backend = DlibBackend()
    a = photos.astronaut()
    rgba = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])
    for view in [a[:, ::-1], np.repeat(np.repeat(a, 2, 0), 2, 1)[::2, ::2], rgba[..., :3], rgba, a.astype(np.float64)]:
        assert not (view.flags.c_contiguous and view.dtype == np.uint8 and view.shape[2] == 3)
        got = backend.detect(view)
        want = backend.detect(np.ascontiguousarray(view[..., :3], dtype=np.uint8))
        assert len(got) == len(want) >= 1
        for g, w in zip(got, want):
            assert np.array_equal(g.bbox, w.bbox) and np.allclose(g.embedding, w.embedding, atol=1e-6)


def test_a_false_detection_beside_the_face_is_not_counted_as_a_face(prepared):
    assert prepared[1]["astro_full.jpg"]["faces_found"] == 1  # dlib's HOG also boxes a patch on her suit (0.07)


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


@pytest.mark.slow
def test_remove_photo_updates_the_record(tmp_path, astro_photos):
    data = tmp_path / "data"
    assert run_cli(data, "prepare", "--user", "a", *map(str, astro_photos)).returncode == 0
    r = run_cli(data, "prepare", "--user", "a", "--remove", "astro_rot.jpg", "--json")
    assert r.returncode == 0, r.stderr
    sources = [p["source"] for p in json.loads(r.stdout[r.stdout.index("{") :])["photos"]]
    assert "astro_rot.jpg" not in sources and len(sources) == len(astro_photos) - 1


@pytest.mark.slow
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
    r = run_cli(
        tmp_path / "data",
        "prepare",
        "--user",
        "a",
        "--backend",
        "insightface",
        str(astro_photos[0]),
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert r.returncode == 2 and "det_10g.onnx" in r.stderr and str(tmp_path / "data") in r.stderr


def _strangers(folder):
    """Photos of two other people: Tom Hanks, and a woman from the t1.jpg group photo."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    hanks = Image.open(photos.insightface_image("Tom_Hanks_54745.png")).convert("RGB").resize((400, 400))
    group = np.asarray(Image.open(photos.insightface_image("t1.jpg")).convert("RGB"))
    return [photos.save(hanks, folder / "hanks.jpg"), photos.save(group[200:520, 350:700], folder / "woman.jpg")]


@pytest.fixture(scope="module")
def set_with_strangers(tmp_path_factory, astro_photos):
    """4 distinct photos of the astronaut and 2 of other people, prepared."""
    base = tmp_path_factory.mktemp("strangers")
    mine = [
        p
        for p in astro_photos
        if p.name in ("astro_full.jpg", "astro_mirror.jpg", "astro_turn.jpg", "astro_turn_mirror.jpg")
    ]
    others = _strangers(base / "others")
    data = base / "data"
    r = run_cli(data, "prepare", "--user", "astro", *map(str, mine + others), "--json")
    assert r.returncode == 0, r.stderr
    return data, {p["source"]: p for p in json.loads(r.stdout[r.stdout.index("{") :])["photos"]}, base


def test_strangers_in_a_set_of_six_are_both_rejected(set_with_strangers):
    _, by_name, _ = set_with_strangers
    for name in ("hanks.jpg", "woman.jpg"):
        assert not by_name[name]["accepted"] and "different person" in by_name[name]["reason"], by_name[name]
        assert by_name[name]["scores"]["likeness"] < 0.3
    mine = [p for n, p in by_name.items() if n.startswith("astro")]
    assert len(mine) == 4 and all(p["accepted"] and p["scores"]["likeness"] > 0.8 for p in mine), mine


@pytest.mark.slow
def test_likeness_separates_an_unseen_photo_of_the_person_from_strangers(set_with_strangers):
    import cv2

    data, _, base = set_with_strangers
    turned_other_way = photos._turned(photos.astronaut()[:, ::-1])[:, ::-1]
    unseen = photos.save((turned_other_way * 0.8).astype(np.uint8), base / "unseen.jpg")  # a look prepare never saw
    group = photos.insightface_image("t1.jpg")
    blank = photos.save(cv2.GaussianBlur(photos.astronaut(), (0, 0), 40), base / "blank.jpg")
    strangers = [str(p) for p in _strangers(base / "more")] + [str(group)]
    r = run_cli(data, "likeness", "--user", "astro", str(unseen), *strangers, str(blank), "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["images"]
    person, others, no_face = rows[0], rows[1:4], rows[4]
    assert person["likeness"] > 0.8 and person["faces"] >= 1
    assert max(o["likeness"] for o in others) < 0.5 and person["likeness"] - max(o["likeness"] for o in others) > 0.3
    assert others[2]["faces"] == 6 and "6 faces" in others[2]["reason"]
    assert no_face["likeness"] is None and no_face["reason"] == "no face found"
    assert json.loads(r.stdout)["backend"] == "dlib"


def test_without_a_recognizer_faces_are_checked_but_nobody_is_judged(tmp_path, astro_photos):
    """--backend offline stands for a platform where dlib cannot be imported: faces are found and cropped,
    strangers are not rejected on a guess, and likeness-based steps say what is missing."""
    data = tmp_path / "data"
    others = _strangers(tmp_path / "others")
    r = run_cli(data, "prepare", "--user", "a", "--backend", "offline", *map(str, astro_photos), *map(str, others))
    assert r.returncode == 0, r.stderr
    assert "identity checks are off" in r.stdout and "different person" not in r.stdout
    r = run_cli(data, "likeness", "--user", "a", str(astro_photos[0]))
    assert r.returncode == 2 and "without a face recognizer" in r.stderr and "Traceback" not in r.stderr


def test_a_platform_without_dlib_is_told_in_the_banner_and_doctor(data_dir, monkeypatch):
    """As on a platform where dlib-bin has no wheel: the app still starts and says what is missing."""
    from types import SimpleNamespace

    from easyphoto_app import doctor, faces
    from easyphoto_app.settings import load_settings
    from easyphoto_app.ui.common import model_banner

    settings = load_settings(data_dir)
    ctx = SimpleNamespace(settings=settings, pipelines=SimpleNamespace(model=None))
    assert "Face recognizer missing" not in model_banner(ctx) and doctor.check(settings)["checks"]["face_models"]["ok"]
    monkeypatch.setattr(faces, "unavailable_reason", lambda: "the 'dlib-bin' package is not installed")
    assert "Face recognizer missing:** No face recognizer: the 'dlib-bin' package is not installed" in model_banner(ctx)
    line = doctor.check(settings)["checks"]["face_models"]
    assert not line["ok"] and "RL, which needs a likeness score, cannot run" in line["fix"]
    assert faces.get_backend("auto", data_dir / "elsewhere").name == "offline"


def test_reference_face_is_the_most_alike_times_frontal_not_the_first():
    from easyphoto_app.faces.prepare import PhotoResult, _reference

    def photo(name, similarity, frontal, accepted=True):
        return PhotoResult(
            name, accepted=accepted, scores={"similarity": similarity, "frontal": frontal, "sharpness": 0.5}
        )

    results = [
        photo("alike-turned", 0.99, 0.3),
        photo("frontal-less-alike", 0.95, 0.9),
        photo("rejected", 1.0, 1.0, False),
        photo("worst", 0.93, 0.5),
    ]
    assert _reference(results).source == "frontal-less-alike"  # 0.855 beats 0.297 and 0.465
    assert _reference([photo("only", 0.9, 0.0)]).source == "only"  # a profile still counts (floor 0.05)
    assert _reference([photo("no", 1.0, 1.0, False)]) is None
    no_identity = [
        PhotoResult("soft", True, scores={"sharpness": 0.2, "frontal": 1.0}),
        PhotoResult("sharp", True, scores={"sharpness": 0.8, "frontal": 0.9}),
    ]
    assert _reference(no_identity).source == "sharp"  # without a recognizer: the sharpest frontal face
