"""Face fusion: the user's own face warped, colour-matched and blended into a template's face, on real photos."""

import dataclasses

import cv2
import numpy as np
import photos
import pytest
from PIL import Image

from easyphoto_app import fusion
from easyphoto_app.faces.base import DetectedFace
from easyphoto_app.faces.images import load_rgb


@pytest.fixture(scope="module")
def dlib_backend():
    from easyphoto_app.faces.dlib_backend import DlibBackend

    return DlibBackend()


@pytest.fixture(scope="module")
def astro(dlib_backend) -> fusion.Source:
    rgb = photos.astronaut()
    return fusion.Source(rgb, dlib_backend.analyze(rgb)[0], 1.0, "astronaut")


@pytest.fixture(scope="module")
def others(dlib_backend) -> dict:
    """Real photos of other people than the astronaut: (image, face) of Tom Hanks and three frontal faces of t1.jpg."""
    t1 = load_rgb(photos.insightface_image("t1.jpg"), 4096)
    faces = sorted(dlib_backend.analyze(t1), key=lambda f: float(f.bbox[0]))
    hanks = load_rgb(photos.insightface_image("Tom_Hanks_54745.png"))
    return {
        "hanks": (hanks, dlib_backend.analyze(hanks)[0]),
        **{f"t1 face {i}": (t1, faces[i]) for i in (0, 2, 3)},
        "t1 turned": (t1, faces[1]),
    }


def kps_face(kps, size=200.0) -> DetectedFace:
    kps = np.asarray(kps, np.float32)
    x, y = kps[:, 0].mean(), kps[:, 1].mean()
    return DetectedFace(
        np.array([x - size / 2, y - size / 2, x + size / 2, y + size / 2], np.float32),
        1.0,
        kps,
        np.zeros(4, np.float32),
    )


def embedding_near(backend, image: np.ndarray, face: DetectedFace) -> np.ndarray:
    """The embedding of the face found around `face` (a crop of twice its size)."""
    x1, y1, x2, y2 = (int(v) for v in face.bbox)
    pad = x2 - x1
    crop = np.ascontiguousarray(image[max(0, y1 - pad) : y2 + pad, max(0, x1 - pad) : x2 + pad])
    return max(backend.analyze(crop), key=lambda f: f.size).embedding


def likeness(backend, image: np.ndarray, face: DetectedFace, to: np.ndarray) -> float:
    """The backend's 0-1 likeness to `to` of the face found around `face`."""
    return backend.likeness(float(embedding_near(backend, image, face) @ to))


def test_similarity_recovers_a_known_turn_scale_and_shift_and_never_mirrors():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = np.radians(23), 1.7, np.array([12.0, -40.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    assert np.allclose(fusion.similarity(src, dst), np.hstack([rot, shift[:, None]]), atol=1e-4)
    noisy = fusion.similarity(src, dst + rng.normal(0, 0.5, dst.shape))
    assert np.abs(noisy[:, :2] - rot).max() < 0.05
    mirrored = fusion.similarity(src, dst * [-1, 1])  # no rotation maps these: the best one is not a reflection
    assert np.linalg.det(mirrored[:, :2]) > 0


def test_pose_of_real_faces_and_a_turned_face_is_refused(astro, others):
    assert abs(fusion.yaw(astro.face.kps)) < 0.15 and abs(fusion.roll(astro.face.kps)) < 6
    w = astro.image.shape[1]
    mirrored = astro.face.kps[[1, 0, 2, 4, 3]] * [-1, 1] + [w - 1, 0]  # the landmarks of the mirrored photo
    assert fusion.yaw(mirrored) == pytest.approx(-fusion.yaw(astro.face.kps), abs=1e-5)
    turn = cv2.getRotationMatrix2D((256.0, 256.0), -20, 1.0)  # the photo turned 20 degrees clockwise
    turned = np.c_[astro.face.kps, np.ones(5)] @ turn.T
    assert fusion.roll(turned) == pytest.approx(fusion.roll(astro.face.kps) + 20, abs=0.01)
    _, away = others["t1 turned"]
    assert fusion.yaw(away.kps) < -fusion.PROFILE_YAW
    assert fusion.why_not_fusable(away) == "it is turned too far from the camera (nearly in profile)"
    assert fusion.why_not_source(away) is None  # as a source it may still suit a template turned alike
    assert all(fusion.why_not_fusable(face) is None for name, (_, face) in others.items() if name != "t1 turned")
    assert "too small" in fusion.why_not_fusable(kps_face(astro.face.kps * 0.3))
    assert fusion.why_not_fusable(dataclasses.replace(astro.face, kps=None)) == "its eyes were not found"


@pytest.mark.parametrize("name", ["hanks", "t1 face 0", "t1 face 2", "t1 face 3"])
def test_fusion_makes_another_persons_face_like_the_user_and_leaves_the_rest(dlib_backend, astro, others, name):
    image, face = others[name]
    fused = fusion.fuse(image, face.kps, astro)
    target = astro.face.embedding
    before, after = likeness(dlib_backend, image, face, target), likeness(dlib_backend, fused, face, target)
    assert before < 0.3 and after > 0.5, (before, after)  # from a stranger to past the same-person threshold
    alpha = fusion.face_mask(face.kps, image.shape)
    assert np.array_equal(fused[alpha == 0], image[alpha == 0])
    step = fusion.edge_step(fused, alpha) / fusion.edge_step(image, alpha)
    assert step < 1.5, "no seam at the mask's edge: at most 1.5x the template's own colour step there"


def test_the_face_is_matched_to_the_templates_skin_colour(astro, others):
    image, face = others["t1 face 2"]  # warm indoor light; the astronaut's studio photo is cooler and paler
    alpha = fusion.face_mask(face.kps, image.shape)
    inside = alpha > 0.5  # where fusion measures the colours it matches
    warped = cv2.warpAffine(astro.image, fusion.similarity(astro.face.kps, face.kps), image.shape[1::-1])

    def lab_mean(img):
        return cv2.cvtColor(img, cv2.COLOR_RGB2LAB).astype(np.float32)[inside].mean(0)

    fused, template = lab_mean(fusion.fuse(image, face.kps, astro)), lab_mean(image)
    assert np.abs(lab_mean(warped) - template).max() > 10  # it had to move
    assert np.abs(fused - template).max() < 4


def test_the_source_is_the_closest_pose_then_the_best_photo():
    def posed(yaw, roll=0.0):  # eyes 100 px apart, the nose yaw half eye distances aside, the whole turned by roll
        pts = np.array([[-50, 0], [50, 0], [50 * yaw, 40], [-30, 80], [30, 80]], np.float64)
        r = np.radians(roll)
        return kps_face(pts @ np.array([[np.cos(r), np.sin(r)], [-np.sin(r), np.cos(r)]]) + 300)

    def source(yaw, quality, roll=0.0):
        return fusion.Source(np.zeros((1, 1, 3), np.uint8), posed(yaw, roll), quality, f"{yaw}/{quality}/{roll}")

    frontal, turned, turned_sharp, tilted = source(0.0, 0.9), source(0.4, 0.5), source(0.45, 0.7), source(0.4, 0.8, 30)
    sources = [frontal, turned, turned_sharp, tilted]
    assert fusion.best_source(posed(0.5), sources) is turned_sharp  # 0.05 closer than turned, and a better photo
    assert fusion.best_source(posed(0.05), sources) is frontal
    assert fusion.best_source(posed(0.4, 28), sources) is tilted
    assert fusion.best_source(posed(-0.4), sources) is frontal  # turned the other way: the frontal one is closest
    assert fusion.pick(posed(0.1), []) == (
        None,
        "none of the user's accepted photos has a face whose eyes could be found",
    )
    assert fusion.pick(posed(0.9), sources) == (None, "it is turned too far from the camera (nearly in profile)")


# ----------------------------------------------------------------------------- in a portrait, on the face model


@pytest.fixture(scope="module")
def face_model(tmp_path_factory):
    """The built-in face model (it paints faces, where the tests' random model paints noise), loaded once."""
    import torch

    from easyphoto_app.demo_model import ensure_demo_model
    from easyphoto_app.loaded_model import LoadedModel
    from easyphoto_app.model_loading import ResolvedModel, load_pipeline

    folder = ensure_demo_model(tmp_path_factory.mktemp("face-model"))
    model = ResolvedModel("dir", "face model", folder)
    return LoadedModel(load_pipeline(model, "cpu", torch.float32), model)


def portrait_of(face_model, ws, template, face_index: int, source, fusion_on: bool):
    """paint() on the face model, no LoRA: what fusion alone brings to a portrait (a Plan as benchmarks/portrait.py
    builds one; the user's faces given rather than read from a prepared user)."""
    from easyphoto_app import portrait
    from easyphoto_app.settings import GenerateConfig, PortraitConfig

    gen = GenerateConfig(  # ip_scale 0: fusion alone, not the identity adapter that no LoRA would call for
        prompt="1person, portrait photo of a woman", num_inference_steps=12, width=128, height=128, ip_scale=0
    )
    cfg = PortraitConfig(num=1, seed=7, face_index=face_index, fusion=fusion_on)
    rgb = load_rgb(template, 4096)
    job = portrait.Plan(
        gen, cfg, "astro", template, gen.prompt, [], rgb, portrait.place(_dlib(), rgb, cfg), sources=[source]
    )
    result = portrait.paint(face_model, ws, job)
    return load_rgb(result.paths[0], 4096), job.spot, result.notes


def _dlib():
    from easyphoto_app.faces import get_backend

    return get_backend("dlib", None)


@pytest.mark.slow
def test_a_fused_portrait_is_more_like_the_user_than_the_templates_face_and_than_painting_alone(
    face_model, tmp_path, dlib_backend, astro
):
    from easyphoto_app.workspace import Workspace

    template = photos.insightface_image("Tom_Hanks_54745.png")
    ws = Workspace(tmp_path / "data")
    fused, spot, notes = portrait_of(face_model, ws, template, -1, astro, True)
    plain, _, _ = portrait_of(face_model, ws, template, -1, astro, False)
    rgb, target = load_rgb(template), astro.face.embedding
    was, alone = likeness(dlib_backend, rgb, spot.face, target), likeness(dlib_backend, plain, spot.face, target)
    now = likeness(dlib_backend, fused, spot.face, target)
    assert now > was + 0.2 and now > alone + 0.2, (was, alone, now)
    assert not [n for n in notes if "fused" in n]


@pytest.mark.slow
def test_a_turned_face_is_painted_without_fusion_and_the_portrait_says_so(face_model, tmp_path, astro):
    from easyphoto_app.workspace import Workspace

    group = photos.insightface_image("t1.jpg")
    ws = Workspace(tmp_path / "data")
    with_fusion, spot, notes = portrait_of(face_model, ws, group, 1, astro, True)
    assert notes[0] == (
        "Face 1 of the template was not fused with astro's own face: it is turned too far from the "
        "camera (nearly in profile). It was painted by the LoRAs alone."
    )
    without, _, _ = portrait_of(face_model, ws, group, 1, astro, False)
    assert np.array_equal(with_fusion, without)


@pytest.mark.slow
def test_two_people_in_a_group_photo_each_land_on_their_own_face_and_the_rest_is_kept(
    face_model, tmp_path, dlib_backend, astro, others
):
    """The astronaut on face 2 of t1.jpg and Tom Hanks on face 3, each from their own photo: each painted face is
    more like its own person than like the other and than it was, and the faces nobody was given keep every pixel."""
    from easyphoto_app import portrait
    from easyphoto_app.settings import GenerateConfig, PortraitConfig
    from easyphoto_app.workspace import Workspace

    group = photos.insightface_image("t1.jpg")
    rgb = load_rgb(group, 4096)
    hanks_image, hanks_face = others["hanks"]
    hanks = fusion.Source(hanks_image, hanks_face, 1.0, "hanks")
    gen = GenerateConfig(prompt="1person, portrait photo", num_inference_steps=12, width=128, height=128, ip_scale=0)
    cfg = PortraitConfig(num=1, seed=7, face_index=2)
    spot = portrait.place(_dlib(), rgb, cfg)
    ben = portrait.Sitter("hanks", portrait.place_at(spot.faces, 3, rgb, cfg), [], [hanks])
    job = portrait.Plan(gen, cfg, "astro", group, gen.prompt, [], rgb, spot, sources=[astro], others=[ben])
    result = portrait.paint(face_model, Workspace(tmp_path / "data"), job)
    out = load_rgb(result.paths[0], 4096)
    assert result.people == [(2, "astro"), (3, "hanks")]
    for face, own, other in ((spot.faces[2], astro, hanks), (spot.faces[3], hanks, astro)):
        found = embedding_near(dlib_backend, out, face)
        to_own, to_other = float(found @ own.face.embedding), float(found @ other.face.embedding)
        was = float(embedding_near(dlib_backend, rgb, face) @ own.face.embedding)
        # dlib cosines measured: face 2 was 0.85 like the astronaut, painted 0.94, and 0.85 like Hanks; face 3 was
        # 0.88 like Hanks, painted 0.89, and 0.84 like the astronaut
        assert to_own > to_other + 0.03 and to_own > was, (was, to_own, to_other)
    for i in (0, 1, 4, 5):
        x1, y1, x2, y2 = (int(v) for v in spot.faces[i].bbox)
        assert np.array_equal(out[y1:y2, x1:x2], rgb[y1:y2, x1:x2]), f"face {i} was nobody's and is kept"
    params = Image.open(result.paths[0]).text["parameters"]
    assert 'Template faces: "2: astro, 3: hanks"' in params
    assert f'Face fusion: "before, after {cfg.fusion_weight:g}"' in params
