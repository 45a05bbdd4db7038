"""The RL reward and the likeness scale, on a backend that 'finds' faces we place: fast, no model.
(The real recognizers on real photos: test_faces.py.)"""

import numpy as np
import pytest
from PIL import Image

from easyphoto_app.faces.base import DetectedFace, FaceBackend, identity_of, normalize
from easyphoto_app.faces.likeness import LikenessScorer


def unit(*v):
    return normalize(np.array(v, dtype=np.float32))


class Placed(FaceBackend):
    """Faces by the image's mean grey level: a stand-in detector whose answers the test chooses."""

    identifies_people = True
    same_person_threshold, stranger_similarity = 0.5, 0.0

    def __init__(self, faces_by_level):
        self.faces_by_level, self.seen = faces_by_level, []

    def detect(self, rgb):
        self.seen.append(rgb.shape)
        return self.faces_by_level[int(rgb.mean())]


def face(x, embedding, ignored=None):
    return DetectedFace(np.array([x, 10, x + 40, 50], dtype=np.float32), 0.9, None, embedding, ignored)


def test_the_reward_is_the_likeness_of_the_most_alike_face_and_0_without_one():
    me = unit(1, 0, 0)
    backend = Placed(
        {
            10: [face(100, unit(1, 1, 0)), face(5, unit(0, 1, 0))],  # two people: the right one looks like me
            20: [],
            30: [face(50, me)],
        }
    )
    scorer = LikenessScorer(backend, [2.0, 0, 0])  # the identity is normalised
    images = [
        Image.new("L", (64, 64), 10),
        np.full((64, 64, 3), 20, np.uint8),
        Image.new("RGB", (64, 64), (30, 30, 30)),
    ]
    rewards, info = scorer(images)
    cos = float(unit(1, 1, 0) @ me)
    assert rewards == [round(backend.likeness(cos), 4), 0.0, 1.0]
    assert info == {"no_face_rate": pytest.approx(1 / 3)}
    # a grey PIL image reaches the detector as RGB; the image without a face is looked at again with a border
    assert backend.seen == [(64, 64, 3), (64, 64, 3), (96, 96, 3), (64, 64, 3)]
    two = scorer.score(images[0])
    assert (two.faces, two.face_index, two.cosine) == (2, 1, round(cos, 4))
    assert two.reason == "2 faces: scored the most alike, face 2 from the left"
    assert scorer.score(images[2]).reason == "one face"
    none = scorer.score(images[1])
    assert (none.likeness, none.cosine, none.faces, none.face_index, none.reason) == (
        None,
        None,
        0,
        None,
        "no face found",
    )
    assert scorer([]) == ([], {"no_face_rate": 0.0})
    assert scorer([images[1]]) == ([0.0], {"no_face_rate": 1.0})


def test_a_box_that_is_not_a_face_is_never_scored_even_where_it_would_win():
    me = unit(1, 0, 0)
    backend = Placed(
        {
            10: [face(5, me, ignored="not a face"), face(100, unit(1, 1, 0))],
            20: [face(5, me, ignored="not a face")],
        }
    )
    scorer = LikenessScorer(backend, me)
    with_face = scorer.score(Image.new("L", (64, 64), 10))
    assert (with_face.faces, with_face.face_index, with_face.reason) == (1, 0, "one face")
    assert with_face.cosine == round(float(unit(1, 1, 0) @ me), 4)
    assert scorer([Image.new("L", (64, 64), 20)]) == ([0.0], {"no_face_rate": 1.0})


def test_a_scorer_comes_from_the_users_reference_or_there_is_none(tmp_path):
    import json

    from easyphoto_app.faces.likeness import scorer_or_none
    from easyphoto_app.workspace import Workspace

    ws = Workspace(tmp_path)
    assert scorer_or_none(ws, "ann") is None  # no photos checked yet
    ws.user_dir("ann").mkdir(parents=True)
    ref = ws.user_dir("ann") / "reference.json"
    ref.write_text(json.dumps({"backend": "offline", "mean_embedding": [1.0, 0.0]}))
    assert scorer_or_none(ws, "ann") is None  # checked without a recognizer: no likeness to score
    ref.write_text(json.dumps({"backend": "dlib", "mean_embedding": [3.0, 4.0] + [0.0] * 126}))
    scorer = scorer_or_none(ws, "ann")
    assert scorer.backend.name == "dlib" and np.allclose(scorer.faces[:, :2], [[0.6, 0.8]])  # no faces: the mean alone
    assert scorer.full == 1.0  # a set of one has no spread: 1 means identical, as before


@pytest.mark.parametrize(
    "cosine, likeness", [(-0.3, 0.0), (0.0, 0.0), (0.25, 0.25), (0.5, 0.5), (0.75, 0.75), (1.0, 1.0), (1.2, 1.0)]
)
def test_likeness_is_0_for_a_stranger_half_at_the_threshold_and_1_for_the_same_face(cosine, likeness):
    b = FaceBackend()
    b.same_person_threshold, b.stranger_similarity = 0.5, 0.0
    assert b.likeness(cosine) == pytest.approx(likeness)
    b.same_person_threshold, b.stranger_similarity = 0.6, 0.2  # another backend's cosines: the same scale
    assert b.likeness(0.2) == 0.0 and b.likeness(0.4) == pytest.approx(0.25) and b.likeness(0.8) == pytest.approx(0.75)


def test_a_faces_size_is_its_shorter_side_and_its_centre_the_boxs():
    f = DetectedFace(np.array([10, 20, 50, 120]), 0.9, None, unit(1, 0))
    assert f.size == 40.0 and f.center == (30.0, 70.0)


def test_the_identity_of_a_set_ignores_two_strangers_in_six():
    me = [unit(1, 0.1 * i, 0) for i in range(4)]
    strangers = [unit(0, 0, 1), unit(0, 0.2, 1)]
    ident = identity_of(me + strangers, threshold=0.5)
    assert np.isclose(np.linalg.norm(ident), 1.0)
    assert float(ident @ unit(0, 0, 1)) < 0.05 and float(ident @ me[0]) > 0.9
    assert np.allclose(normalize(np.zeros(3)), 0)  # no division by zero for an empty vector


def spread_set(n=5, angle=0.2):
    """n unit faces at `angle` radians around a centre (1, 0, 0): every pair alike by the same cosine."""
    centre = np.array([1.0, 0, 0])
    ring = [np.array([0, np.cos(a), np.sin(a)]) for a in np.linspace(0, 2 * np.pi, n, endpoint=False)]
    return np.stack([normalize(np.cos(angle) * centre + np.sin(angle) * r) for r in ring]), centre


def test_full_marks_are_the_users_own_spread_and_a_copy_of_one_photo_earns_no_more_than_the_centre():
    from easyphoto_app.faces.likeness import TOP, full_marks

    faces, centre = spread_set()
    b = FaceBackend()
    b.same_person_threshold, b.stranger_similarity = 0.5, 0.0
    scorer = LikenessScorer(b, faces)
    pair = faces @ faces.T
    own = [np.sort(np.delete(row, i))[::-1][:TOP].mean() for i, row in enumerate(pair)]  # each face vs the others
    assert scorer.full == pytest.approx(np.median(own)) == pytest.approx(full_marks(faces, b))
    copy, cosine = scorer.likeness(faces[0])
    assert cosine == pytest.approx((1 + np.sort(pair[0])[::-1][1:TOP].sum()) / TOP)  # its own 1, then its neighbours
    assert copy == scorer.likeness(centre)[0] == 1.0  # closer than the user's own photos earns nothing more
    assert scorer.likeness(faces[0] + faces[1])[0] == 1.0  # nor does a face between two of them
    halfway = normalize(np.cos(0.9) * centre + np.sin(0.9) * np.array([0, 1.0, 0]))
    value, cos_half = scorer.likeness(halfway)
    assert value == pytest.approx(0.5 + 0.5 * (cos_half - 0.5) / (scorer.full - 0.5)) and 0.5 < value < 0.9
    stranger = scorer.likeness(np.array([-1.0, 0, 0]))
    assert stranger[0] == 0.0


def test_a_set_of_photos_barely_alike_still_puts_full_marks_above_the_threshold():
    from easyphoto_app.faces.likeness import MIN_HEADROOM

    faces, _ = spread_set(angle=1.2)  # pairwise cosines about 0.13 with a 0.5 threshold
    b = FaceBackend()
    b.same_person_threshold, b.stranger_similarity = 0.5, 0.0
    assert LikenessScorer(b, faces).full == pytest.approx(0.5 + MIN_HEADROOM * 0.5)


@pytest.fixture(scope="module")
def astro_user(tmp_path_factory):
    """The astronaut set prepared with dlib: (workspace, the photos)."""
    import photos

    from easyphoto_app.faces.prepare import prepare
    from easyphoto_app.settings import FaceConfig
    from easyphoto_app.workspace import Workspace

    tmp = tmp_path_factory.mktemp("astro-user")
    files = photos.astronaut_set(tmp / "photos")
    ws = Workspace(tmp / "data")
    prepare(ws, "astro", files, FaceConfig(backend="dlib"))
    return ws, files


@pytest.mark.slow
def test_real_photos_score_against_every_accepted_face_each_of_them_full_marks(astro_user):
    """Before: the cosine to the mean embedding, where the user's own photos scored 0.93-0.96 and a copy of one
    photo outscored them. Now each accepted photo, and a new look of the face, is full marks; a stranger stays low."""
    import photos

    from easyphoto_app.faces.images import load_rgb
    from easyphoto_app.faces.likeness import scorer_for
    from easyphoto_app.faces.prepare import load_record

    ws, files = astro_user
    scorer = scorer_for(ws, "astro")
    accepted = [p["source"] for p in load_record(ws, "astro")["photos"] if p["accepted"]]
    assert len(scorer.faces) == len(accepted) == 4
    assert scorer.backend.same_person_threshold < scorer.full < 0.99
    for path in (f for f in files if f.name in accepted):
        assert scorer.score(load_rgb(path)).likeness == 1.0, path.name
    assert scorer.score(photos.distinct_looks(photos.astronaut())["turn-0.16"]).likeness == 1.0  # a look it never saw
    hanks = scorer.score(load_rgb(photos.insightface_image("Tom_Hanks_54745.png")))
    assert hanks.likeness < 0.2 and hanks.cosine < scorer.backend.same_person_threshold


def test_an_old_reference_without_faces_is_upgraded_from_the_accepted_crops(astro_user, tmp_path):
    import json
    import shutil

    from easyphoto_app.faces.likeness import scorer_for
    from easyphoto_app.workspace import Workspace

    ws = Workspace(tmp_path / "data")
    shutil.copytree(astro_user[0].root, ws.root)
    path = ws.user_dir("astro") / "reference.json"
    written = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in written.items() if k != "faces"}))  # as prepare wrote it before
    scorer = scorer_for(ws, "astro")
    upgraded = json.loads(path.read_text())
    assert [f["source"] for f in upgraded["faces"]] == [f["source"] for f in written["faces"]]
    agree = np.sum(scorer.faces * np.array([f["embedding"] for f in written["faces"]]), axis=1)
    assert agree.min() > 0.99  # the crops' faces are the photos' faces
    for crop in (ws.faces_dir("astro")).glob("*.jpg"):
        crop.unlink()
    path.write_text(json.dumps({k: v for k, v in written.items() if k != "faces"}))
    assert len(scorer_for(ws, "astro").faces) == 1  # nothing to read: the mean embedding alone, as before
