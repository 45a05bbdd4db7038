"""Template portraits: the face painted into a photo, the rest of it kept pixel for pixel."""

import json

import numpy as np
import photos
import pytest
from conftest import run_cli
from PIL import Image

from easyphoto_app import portrait
from easyphoto_app.errors import UserError
from easyphoto_app.faces.base import DetectedFace
from easyphoto_app.faces.likeness import Score
from easyphoto_app.portrait import Candidate, choose_face, feathered_mask, match_colour, paste, rank, square_around


def face_at(x1, y1, x2, y2, score=1.0) -> DetectedFace:
    return DetectedFace(np.array([x1, y1, x2, y2], np.float32), score, None, np.zeros(4, np.float32))


def test_mask_is_feathered_and_zero_at_the_crop_border():
    alpha = feathered_mask(face_at(140, 150, 260, 270), (0, 0, 400), 400)
    assert alpha.dtype == np.float32 and alpha.min() == 0.0 and alpha.max() == 1.0
    assert alpha[200, 200] == 1.0  # the face itself is fully painted
    row = alpha[200]
    soft = (row > 0) & (row < 1)
    assert soft.sum() >= 2 * 15, "a soft band of intermediate alphas on each side, not a hard seam"
    edge = np.concatenate([alpha[:3].ravel(), alpha[-3:].ravel(), alpha[:, :3].ravel(), alpha[:, -3:].ravel()])
    assert edge.max() == 0.0, "the square's border is outside the mask, so no seam where the crop ends"
    assert alpha[60, 200] > 0, "the mask reaches above the detector's box, to the hair line"


def test_mask_reaches_the_hair_line_and_the_ears_but_not_the_neck():
    """Half-way up its soft edge, the mask follows an ellipse around the detector's box (brows to chin): 0.4 face
    heights above the box, 1/6 below it, 0.12 face widths beyond each side."""
    alpha = feathered_mask(face_at(140, 150, 260, 270), (0, 0, 400), 400)
    rows, cols = np.nonzero(alpha[:, 200] >= 0.5)[0], np.nonzero(alpha[196] >= 0.5)[0]
    assert abs(rows[0] - 102) <= 4 and abs(rows[-1] - 290) <= 4
    assert abs(cols[0] - 126) <= 4 and abs(cols[-1] - 274) <= 4
    assert alpha[350:, 200].max() == 0.0, "the neck and collar stay the template's"


def test_mask_border_stays_zero_when_the_face_fills_the_crop():
    alpha = feathered_mask(face_at(0, 0, 300, 300), (0, 0, 300), 300)  # the ellipse reaches past the square
    assert alpha[0].max() == 0 and alpha[-1].max() == 0 and alpha[:, 0].max() == 0 and alpha[:, -1].max() == 0


def test_paste_keeps_every_pixel_where_alpha_is_zero():
    rng = np.random.default_rng(0)
    template = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    patch = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    alpha = np.zeros((120, 120), np.float32)
    alpha[30:90, 30:90] = 1.0
    alpha[25:30, 30:90] = 0.5
    out = paste(template, patch, alpha, (200, 50, 120))
    keep = np.ones((300, 400), bool)
    keep[50:170, 200:320] = alpha == 0
    assert np.array_equal(out[keep], template[keep])
    assert np.array_equal(out[50 + 30 : 50 + 90, 200 + 30 : 200 + 90], patch[30:90, 30:90])
    half = out[50 + 25 : 50 + 30, 200 + 30 : 200 + 90].astype(int)
    expected = (template[75:80, 230:290].astype(int) + patch[25:30, 30:90].astype(int)) / 2
    assert np.abs(half - expected).max() <= 1


@pytest.mark.parametrize(
    "bbox, size, expected",
    [
        ((500, 400, 600, 500), (1200, 900), (440, 340, 220)),  # centred on the face
        ((10, 10, 110, 110), (1200, 900), (0, 0, 220)),  # moved inside at the top-left corner, not cut
        ((1100, 800, 1190, 890), (1200, 900), (1002, 702, 198)),  # and at the bottom-right
        ((100, 100, 400, 400), (500, 450), (25, 0, 450)),  # never larger than the image's short side
        ((0, 100, 150, 250), (300, 600), (0, 25, 300)),  # a portrait-shaped image: the width limits it
    ],
)
def test_square_around_the_face_stays_inside_the_image(bbox, size, expected):
    assert square_around(face_at(*bbox), *size, scale=2.2) == expected


def test_face_choice_by_index_the_largest_by_default_and_clear_refusals():
    faces = [face_at(0, 0, 50, 50), face_at(100, 0, 220, 120), face_at(300, 0, 380, 80)]
    assert choose_face(faces, 2) == (2, None)
    index, note = choose_face(faces, -1)
    assert index == 1 and "3 faces" in note and "largest (face 1" in note
    assert choose_face(faces[:1], -1) == (0, None)
    with pytest.raises(UserError) as refused:
        choose_face(faces, 3)
    assert str(refused.value) == (
        "The template has 3 face(s); face index 3 does not exist (use 0 to 2, counted from the left)."
    )
    with pytest.raises(
        UserError, match="^No face found in the template: choose a photo where one face is clearly visible.$"
    ):
        choose_face([], -1)


def test_among_faces_of_about_the_same_size_the_default_is_the_one_the_detector_is_surest_of():
    weak_left, sure = face_at(0, 0, 100, 100, score=0.07), face_at(300, 0, 392, 92, score=1.5)
    assert choose_face([weak_left, sure], -1)[0] == 1  # 92 px is within 10% of 100 px
    assert choose_face([weak_left, face_at(300, 0, 380, 80, score=1.5)], -1)[0] == 0  # 80 px: clearly smaller
    assert choose_face([sure, weak_left], -1)[0] == 0


@pytest.fixture(scope="module")
def pasted(tmp_path_factory):
    """The astronaut pasted into a 1200x900 grey scene: dlib finds her face and, as large, a patch on her suit."""
    canvas = np.full((900, 1200, 3), 90, np.uint8)
    canvas[200:712, 300:812] = photos.astronaut()
    return canvas


def test_a_false_detection_as_large_as_the_face_is_crossed_out_and_never_painted(pasted):
    from easyphoto_app.faces.dlib_backend import DlibBackend
    from easyphoto_app.settings import PortraitConfig

    backend = DlibBackend()
    faces, ignored = portrait.boxes_left_to_right(backend, pasted)
    assert len(faces) == 1 and len(ignored) == 1
    assert ignored[0].size == pytest.approx(faces[0].size) and ignored[0].bbox[0] < faces[0].bbox[0]  # a tie, left-most
    assert ignored[0].ignored.startswith("not a face: a weak detection (score 0.15)")
    fx, fy = faces[0].center
    assert 480 < fx < 560 and 280 < fy < 370  # her face, not the patch on her chest (y 577)
    spot = portrait.place(backend, pasted, PortraitConfig())
    x0, y0, side = spot.box
    px, py = ignored[0].center
    assert x0 < fx < x0 + side and y0 < fy < y0 + side and not y0 < py < y0 + side
    preview = portrait.annotate(pasted, faces, 0, ignored)
    x1, y1, x2, y2 = (int(round(float(v))) for v in ignored[0].bbox)
    assert tuple(preview[(y1 + y2) // 2, x1]) == portrait.IGNORED_RED  # crossed out in red, its edge
    assert tuple(preview[y1 + 10, x1 + 10]) == portrait.IGNORED_RED  # and its diagonal
    assert not (preview[max(0, y1 - 40) : y1, x1:x2] == (255, 190, 0)).all(axis=2).any()  # no number for it


def test_colour_match_moves_the_painted_face_to_the_templates_colours():
    import cv2

    rng = np.random.default_rng(1)

    def from_lab(mean, spread):  # a different spread in each channel: each is matched on its own
        return cv2.cvtColor(np.clip(rng.normal(mean, spread, (64, 64, 3)), 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)

    reference, painted = from_lab([170, 150, 150], [12, 6, 2]), from_lab([110, 140, 100], [30, 3, 12])
    alpha = np.zeros((64, 64), np.float32)
    alpha[8:56, 8:56] = 1.0
    out = match_colour(painted, reference, alpha)

    def lab_stats(img):
        lab = cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)[8:56, 8:56].reshape(-1, 3)
        return lab.mean(0), lab.std(0)

    (m_out, s_out), (m_ref, s_ref) = lab_stats(out), lab_stats(reference)
    assert np.abs(m_out - m_ref).max() < 3 and np.abs(s_out - s_ref).max() < 3
    assert np.abs(lab_stats(painted)[0] - m_ref).max() > 20  # it did have to move
    few = np.zeros((64, 64), np.float32)
    few[:4, :4] = 1.0  # 16 pixels are enough to measure colours on; fewer are left as painted
    assert not np.array_equal(match_colour(painted, reference, few), painted)
    few[0, 0] = 0.0
    assert np.array_equal(match_colour(painted, reference, few), painted)


def test_candidates_are_ranked_most_alike_first_unscored_last():
    def cand(seed, value):
        return Candidate(
            np.zeros(1), seed, None if value == "none" else Score(value, 0.0, 1 if value is not None else 0, 0, "")
        )

    ranked = rank([cand(1, 0.2), cand(2, None), cand(3, 0.9), cand(4, "none"), cand(5, 0.5)])
    assert [c.seed for c in ranked] == [3, 5, 1, 2, 4]


def test_the_inpainting_pipeline_shares_the_loaded_unet(data_dir):
    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.portrait import inpaint_pipeline
    from easyphoto_app.settings import load_settings

    loaded = PipelineCache().get(load_settings(data_dir))
    pipe, painter = loaded.pipe, inpaint_pipeline(loaded)
    assert painter is inpaint_pipeline(loaded)  # made once per loaded model
    for name in ("unet", "vae", "text_encoder"):
        ours, theirs = getattr(painter, name), getattr(pipe, name)
        assert ours is theirs
        assert all(a.data_ptr() == b.data_ptr() for a, b in zip(ours.parameters(), theirs.parameters()))


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return photos.scene(tmp_path_factory.mktemp("templates") / "scene.jpg")


def test_portrait_keeps_the_template_outside_the_face_and_records_both_loras(rl_home, scene):
    r = run_cli(
        rl_home,
        "portrait",
        "--user",
        "astro",
        "--template",
        str(scene),
        "--num",
        "2",
        "--seed",
        "4",
        "--num-inference-steps",
        "6",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted(out["seeds"]) == [4, 5] and len(out["paths"]) == 2
    template = np.asarray(Image.open(scene).convert("RGB")).astype(int)
    x0, y0, side = out["box"]
    for path, seed in zip(out["paths"], out["seeds"]):
        img = Image.open(path)
        assert img.size == (1200, 900)
        pixels = np.asarray(img.convert("RGB")).astype(int)
        outside = np.ones(template.shape[:2], bool)
        outside[y0 : y0 + side, x0 : x0 + side] = False
        assert np.abs(pixels - template)[outside].max() <= 1
        corners = [(y0 + 2, x0 + 2), (y0 + 2, x0 + side - 3), (y0 + side - 3, x0 + 2), (y0 + side - 3, x0 + side - 3)]
        assert all(np.abs(pixels[y, x] - template[y, x]).max() <= 1 for y, x in corners)  # the crop's corners too
        middle = (slice(y0 + side * 2 // 5, y0 + side * 3 // 5), slice(x0 + side * 2 // 5, x0 + side * 3 // 5))
        assert np.abs(pixels[middle] - template[middle]).mean() > 5, "the face was repainted"
        params = img.text["parameters"]
        assert "<lora:astro:1> <lora:ddpo_astro:1>" in params and f"Seed: {seed}," in params
        assert "Denoising strength: 0.45" in params and "Template: scene.jpg" in params
        assert "Face likeness: none" in params  # the demo model paints noise: no face to score
    assert "largest" not in r.stderr  # the patch on her suit that dlib's HOG boxes is no face: nothing to choose from


def test_candidates_are_scored_on_the_painted_square_saved_best_first_and_repeatable(
    rl_copy, demo_pipe, scene, monkeypatch
):
    """paint() in this process, with a recognizer that scores the second candidate higher (the demo paints no face)."""
    from easyphoto_app.faces import get_backend
    from easyphoto_app.faces.likeness import Score
    from easyphoto_app.portrait import paint, plan
    from easyphoto_app.settings import GenerateConfig, PortraitConfig
    from easyphoto_app.workspace import Workspace

    class Scorer:
        def __init__(self):
            self.crops = []

        def score(self, crop):
            self.crops.append(crop.shape)
            return Score(0.3 if len(self.crops) % 2 else 0.8, 0.0, 1, 0, "")

    scorer = Scorer()
    monkeypatch.setattr("easyphoto_app.faces.likeness.scorer_or_none", lambda ws, user: scorer)
    ws = Workspace(rl_copy)
    gen = GenerateConfig(num_inference_steps=4, width=64, height=64, scheduler="DDIM")
    job = plan(ws, gen, PortraitConfig(num=2, seed=3), "astro", scene, get_backend("auto", rl_copy))
    result = paint(demo_pipe, ws, job)
    side = result.box[2]
    assert scorer.crops == [(side, side, 3)] * 2  # each candidate scored on the square it painted
    assert result.seeds == [4, 3] and result.likeness == [0.8, 0.3]
    params = [Image.open(p).text["parameters"] for p in result.paths]
    assert "Face likeness: 0.80," in params[0] and "Face likeness: 0.30," in params[1]
    assert all("Size: 1200x900," in p and "Template: scene.jpg" in p for p in params)  # the file's size, not 64 px
    again = paint(
        demo_pipe, ws, plan(ws, gen, PortraitConfig(num=1, seed=4), "astro", scene, get_backend("auto", rl_copy))
    )
    assert np.array_equal(np.asarray(Image.open(again.paths[0])), np.asarray(Image.open(result.paths[0])))


def test_portrait_paints_the_face_chosen_by_index_in_a_group_photo(rl_home, tmp_path):
    group = photos.insightface_image("t1.jpg")
    r = run_cli(
        rl_home,
        "portrait",
        "--user",
        "astro",
        "--template",
        str(group),
        "--face-index",
        "2",
        "--num",
        "1",
        "--seed",
        "1",
        "--num-inference-steps",
        "4",
        "--no-rl",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["face_index"] == 2 and out["faces"] >= 4
    from easyphoto_app.faces import get_backend
    from easyphoto_app.faces.images import load_rgb
    from easyphoto_app.portrait import faces_left_to_right

    rgb = load_rgb(group, max_side=4096)
    third = faces_left_to_right(get_backend("auto", rl_home), rgb)[2]
    x0, y0, side = out["box"]
    cx, cy = third.center
    assert x0 < cx < x0 + side and y0 < cy < y0 + side, "the painted square is around the third face from the left"
    params = Image.open(out["paths"][0]).text["parameters"]
    assert "ddpo_astro" not in params and "Template face: 2" in params


BAD_TEMPLATES = [
    ("coffee", "No face found in the template"),
    ("tiny", "portraits need at least 64 px"),
    ("truncated", "damaged or truncated"),
    ("text", "not an image file"),
]


@pytest.mark.parametrize(
    "case, expected",
    BAD_TEMPLATES
    + [
        ("index", "face index 9 does not exist"),
        ("no-lora", "has no face LoRA yet"),
    ],
)
def test_portrait_refusals_are_one_line_and_write_nothing(
    trained_home, tmp_path, scene, case, expected, capsys, cli_process_state, monkeypatch
):
    """Said before a model loads (cli.main in this process; loading the model would fail the test)."""
    import shutil

    from easyphoto_app import cli
    from easyphoto_app.pipeline_cache import PipelineCache

    def no_model(*args):
        raise AssertionError("a refused portrait loaded a model")

    monkeypatch.setattr(PipelineCache, "get", no_model)
    home = tmp_path / "data"
    shutil.copytree(trained_home, home)
    if case == "no-lora":
        shutil.rmtree(home / "loras")
    bad = photos.bad_files(tmp_path / "bad")
    template = {"index": scene, "no-lora": scene}.get(case) or bad[case]
    extra = {"index": ["--face-index", "9"], "no-lora": ["--ip-scale", "0"]}.get(case, [])  # no instant mode
    code = cli.main(
        [
            "--data-dir",
            str(home),
            "portrait",
            "--user",
            "astro",
            "--template",
            str(template),
            "--num-inference-steps",
            "4",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not (home / "outputs").exists() or not list((home / "outputs").rglob("*.png"))


def tiny_controlnet(demo_model_dir, folder):
    """A ControlNet shaped for the demo UNet; its zero-initialised output convolutions are made random, so it
    changes what is painted (as a trained one does)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(demo_model_dir / "unet"))
    torch.manual_seed(0)
    with torch.no_grad():
        for block in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            block.weight.normal_(0, 0.5)
    net.save_pretrained(folder, safe_serialization=True)
    (folder / "diffusion_pytorch_model.bin").write_bytes(b"pickled weights must never be fetched")
    return folder


def test_controlnet_canny_downloads_once_changes_the_painting_and_then_works_offline(
    rl_home, scene, demo_model_dir, tmp_path
):
    from hub_server import HubServer

    from easyphoto_app.controlnet import CANNY_REPO

    repo = tiny_controlnet(demo_model_dir, tmp_path / "repo")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    args = [
        "portrait",
        "--user",
        "astro",
        "--template",
        str(scene),
        "--num",
        "1",
        "--seed",
        "3",
        "--num-inference-steps",
        "4",
        "--strength",
        "1",
        "--no-rl",
        "--json",
    ]

    def painted(r):
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout.strip().splitlines()[-1])
        x0, y0, side = out["box"]
        img = Image.open(out["paths"][0])
        return np.asarray(img.convert("RGB")).astype(int)[y0 : y0 + side, x0 : x0 + side], img.text["parameters"]

    with HubServer(CANNY_REPO, repo) as hub:
        env["HF_ENDPOINT"] = hub.url
        plain, plain_params = painted(run_cli(rl_home, *args, env=env))
        assert hub.downloads == []  # off by default: nothing fetched
        held, params = painted(run_cli(rl_home, *args, "--controlnet", env=env))
        assert sorted(hub.downloads) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert 'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny, Weight: 0.6"' in params
    assert "ControlNet" not in plain_params
    assert np.abs(held - plain).mean() > 1, "the ControlNet's residuals reached the UNet"
    again, _ = painted(run_cli(rl_home, *args, "--controlnet", env=env))  # the hub is gone: the cache serves
    assert np.array_equal(again, held)
    r = run_cli(rl_home, *args, "--controlnet", env={**env, "HF_HOME": str(tmp_path / "empty")})
    assert r.returncode == 2 and "Structure control needs lllyasviel/control_v11p_sd15_canny" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_templates_are_kept_under_safe_new_names_listed_and_deleted(tmp_path):
    from easyphoto_app import portrait
    from easyphoto_app.faces import get_backend
    from easyphoto_app.workspace import Workspace

    ws = Workspace(tmp_path / "data")
    assert portrait.list_templates(ws) == []  # no templates folder yet
    src = tmp_path / "My Photo (1).JPG"
    Image.fromarray(photos.astronaut()).save(src, format="JPEG")
    backend = get_backend("auto", ws.root)
    first, second, third = (portrait.add_template(ws, src, backend) for _ in range(3))
    assert (first.name, second.name, third.name) == (
        "My_Photo_1.jpg",
        "My_Photo_1-1.jpg",
        "My_Photo_1-2.jpg",
    )  # never overwrites
    assert first.read_bytes() == src.read_bytes() == second.read_bytes() == third.read_bytes()
    (ws.templates_dir / ".partial").write_bytes(b"")  # hidden files and folders are not templates
    (ws.templates_dir / "sub").mkdir()
    assert portrait.list_templates(ws) == [second, third, first]  # by name
    assert portrait.resolve_template(ws, "My_Photo_1.jpg") == first and portrait.resolve_template(ws, src) == src
    with pytest.raises(UserError, match="^Template gone.jpg not found \\(give a photo's path, or the name of one in "):
        portrait.resolve_template(ws, "gone.jpg")
    portrait.delete_template(ws, "../data/templates/My_Photo_1.jpg")  # only ever inside templates/
    assert portrait.list_templates(ws) == [second, third]
    with pytest.raises(UserError, match="^No template named 'My_Photo_1.jpg'.$"):
        portrait.delete_template(ws, "My_Photo_1.jpg")
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    with pytest.raises(UserError, match="^Template notes.jpg: "):
        portrait.add_template(ws, bad, backend)
    assert portrait.list_templates(ws) == [second, third]


@pytest.mark.parametrize("case, expected", BAD_TEMPLATES)
def test_a_refused_template_is_not_kept(tmp_path, case, expected):
    """An upload that painting would refuse (no face, a face too small, not an image) leaves nothing in templates/,
    so it never shows in the Template list."""
    from easyphoto_app import portrait
    from easyphoto_app.faces import get_backend
    from easyphoto_app.workspace import Workspace

    ws = Workspace(tmp_path / "data")
    bad = photos.bad_files(tmp_path / "bad")[case]
    with pytest.raises(UserError) as refused:
        portrait.add_template(ws, bad, get_backend("auto", ws.root))
    assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert portrait.list_templates(ws) == []
    assert not ws.templates_dir.exists() or not any(ws.templates_dir.iterdir())  # no temp file left either


def test_a_huge_template_is_scaled_to_the_largest_side_painted(tmp_path, monkeypatch):
    from easyphoto_app import portrait

    monkeypatch.setattr(portrait, "MAX_TEMPLATE_SIDE", 300)
    path = tmp_path / "wide.png"
    Image.new("RGB", (600, 200), "white").save(path)
    assert portrait.load_template(path).shape == (100, 300, 3)


def test_the_preview_boxes_each_face_and_marks_the_chosen_one_green():
    from easyphoto_app import portrait

    rgb = np.zeros((400, 800, 3), np.uint8)
    out = portrait.annotate(rgb, [face_at(100, 100, 200, 220), face_at(500, 120, 600, 240)], chosen=1)
    assert rgb.max() == 0  # the template itself is left alone
    assert tuple(out[160, 100]) == (255, 190, 0) and tuple(out[180, 500]) == (40, 200, 60)  # left edges
    assert tuple(out[220, 150]) == (255, 190, 0) and tuple(out[160, 300]) == (0, 0, 0)
    assert (out[60:100, 100:130] == (255, 190, 0)).all(axis=2).any()  # its number above the box
    assert not (out[102:219, 103:140] == (255, 190, 0)).all(axis=2).any(), "no number inside the box, over the face"
    thick = np.argwhere((out[:, 150] == (255, 190, 0)).all(axis=1))[:, 0]
    assert list(thick) == [99, 100, 101, 219, 220, 221]  # the thinnest lines cv2 draws thicker than 1 px
    big = portrait.annotate(np.zeros((1600, 1600, 3), np.uint8), [face_at(400, 400, 800, 800)])
    assert (big[:, 600] == (255, 190, 0)).all(axis=1).sum() == 2 * 5  # 4 px lines at this size
    assert (big[:396, 400:] == (255, 190, 0)).all(axis=2).sum() > 500  # and its number in strokes as thick (1 px: ~200)


def test_resize_square_shrinks_by_area_and_enlarges_smoothly():
    from easyphoto_app import portrait

    stripes = np.zeros((400, 400, 3), np.uint8)
    stripes[:, ::2] = 255
    small = portrait.resize_square(stripes, 100)
    assert small.shape == (100, 100, 3) and small.std() < 2  # averaged, not sampled
    step = np.zeros((8, 8, 3), np.uint8)
    step[:, 4:] = 255
    big = portrait.resize_square(step, 64)
    assert big.shape == (64, 64, 3) and len(np.unique(big[0])) > 4  # a smooth edge, not blocks


def test_several_people_are_each_painted_with_their_own_loras_and_ranked_by_the_least_alike(
    rl_copy, demo_pipe, monkeypatch
):
    """astro on face 2 of t1.jpg and ben (a second user with a face LoRA of his own) on face 0: while each face is
    painted, that person's LoRAs are the fused ones; a candidate ranks by the lower of its two likenesses."""
    import shutil

    from easyphoto_app import generate
    from easyphoto_app.faces import get_backend
    from easyphoto_app.portrait import paint, plan, resize_square
    from easyphoto_app.settings import GenerateConfig, PortraitConfig
    from easyphoto_app.workspace import Workspace

    ws = Workspace(rl_copy)
    shutil.copytree(ws.user_dir("astro"), ws.user_dir("ben"))
    shutil.copyfile(ws.face_lora("astro"), ws.face_lora("ben"))
    painted, real_run = [], generate.run_pipeline

    def spy(painter, *args, **call):
        painted.append((demo_pipe.fused, np.asarray(call["image"])))
        return real_run(painter, *args, **call)

    likeness = {"astro": iter([0.9, 0.4]), "ben": iter([0.3, 0.7])}  # per candidate, seed 3 then 4

    class Scorer:
        def __init__(self, user):
            self.user = user

        def score(self, crop):
            return Score(next(likeness[self.user]), 0.0, 1, 0, "")

    monkeypatch.setattr(generate, "run_pipeline", spy)
    monkeypatch.setattr("easyphoto_app.faces.likeness.scorer_or_none", lambda ws, user: Scorer(user))
    group = photos.insightface_image("t1.jpg")
    gen = GenerateConfig(num_inference_steps=4, width=64, height=64, scheduler="DDIM")
    job = plan(
        ws,
        gen,
        PortraitConfig(num=2, seed=3, face_index=2, fusion=False),
        "astro",
        group,
        get_backend("auto", rl_copy),
        others={0: "ben"},
    )
    result = paint(demo_pipe, ws, job)
    size = painted[0][1].shape[0]
    squares = [
        resize_square(job.rgb[y0 : y0 + side, x0 : x0 + side], size)
        for x0, y0, side in (s.spot.box for s in job.sitters)
    ]
    assert [p[0] for p in painted] == [("ep_astro", "ep_ddpo_astro"), ("ep_ben",)] * 2
    assert all(np.array_equal(image, squares[n % 2]) for n, (_, image) in enumerate(painted))
    assert result.seeds == [4, 3] and result.likeness == [0.4, 0.3] and result.people == [(0, "ben"), (2, "astro")]
    params = Image.open(result.paths[0]).text["parameters"]
    assert "<lora:astro:1> <lora:ddpo_astro:1> <lora:ben:1>" in params and "Face fusion: off" in params
    assert 'Template faces: "0: ben, 2: astro"' in params and 'Face likenesses: "0: 0.70, 2: 0.40"' in params
    assert "Face likeness: 0.40," in params and "Template face:" not in params


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--face", "0:astro"], "--face takes FACE=USER"),
        (["--user", "astro", "--face", "1=astro", "--face", "1=astro"], "Face 1 is given twice (astro and astro)"),
        (["--face", "2=astro", "--face", "2=astro"], "Face 2 is given to both astro and astro"),
        (["--user", "astro", "--face-index", "2", "--face", "2=astro"], "Face 2 is given to both astro and astro"),
        (["--user", "astro", "--face", "9=astro"], "face index 9 does not exist"),
        (["--user", "astro", "--face", "0=nobody"], "No user 'nobody' yet"),
        ([], "Say whose face to paint"),
    ],
)
def test_several_people_refusals_are_one_line_before_a_model_loads(
    home_copy, args, expected, capsys, cli_process_state, monkeypatch
):
    from easyphoto_app import cli
    from easyphoto_app.pipeline_cache import PipelineCache

    monkeypatch.setattr(PipelineCache, "get", lambda *a: pytest.fail("a refused portrait loaded a model"))
    code = cli.main(
        ["--data-dir", str(home_copy), "portrait", "--template", str(photos.insightface_image("t1.jpg")), *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
