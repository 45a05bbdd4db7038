"""The per-face scores and the aligned crop, on images drawn here and the astronaut photo. Fast, no detector.
(The same scores deciding which real photos pass: test_faces.py.)"""

import cv2
import numpy as np
import photos
import pytest

from easyphoto_app.faces import quality
from easyphoto_app.faces.base import DetectedFace


def face(bbox, kps=None):
    return DetectedFace(
        np.array(bbox, dtype=np.float32),
        0.9,
        None if kps is None else np.array(kps, np.float32),
        np.zeros(4, np.float32),
    )


@pytest.mark.parametrize(
    "eyes, angle",
    [(((0, 0), (10, 0)), 0.0), (((0, 0), (10, 10)), 45.0), (((0, 10), (10, 0)), -45.0), (((10, 0), (0, 0)), 180.0)],
)
def test_the_eye_angle_is_the_rotation_that_levels_the_eyes(eyes, angle):
    assert quality.eye_angle(face([0, 0, 10, 10], [*eyes, (5, 5)])) == pytest.approx(angle)
    assert quality.eye_angle(face([0, 0, 10, 10])) == 0.0  # no landmarks: no rotation


def test_the_crop_is_centred_on_the_face_with_22x_context_and_levels_tilted_eyes():
    rgb = np.zeros((400, 400, 3), np.uint8)
    rgb[190:211, 290:311] = 255  # a 20 px white square at the centre of a 100 px face box (off the diagonal)
    crop = quality.align_crop(rgb, face([250, 150, 350, 250]), 110)
    assert crop.shape == (110, 110, 3)
    white = np.argwhere(crop[..., 0] > 127)
    assert abs(white.mean(axis=0) - 54.5).max() < 1.5  # centred
    assert 8 <= len(np.unique(white[:, 0])) <= 12  # 20 px of 220 px of context at 110 px: about 10 px
    eyes = np.zeros((400, 400, 3), np.uint8)
    left, right = (170, 180), (230, 220)  # x, y: the right eye lower, as a tilted head
    for x, y in (left, right):
        cv2.circle(eyes, (x, y), 6, (255, 255, 255), -1)
    crop = quality.align_crop(eyes, face([150, 150, 250, 250], [left, right, (200, 210)]), 220)
    rows = [np.argwhere(crop[:, :110, 0] > 127)[:, 0].mean(), np.argwhere(crop[:, 110:, 0] > 127)[:, 0].mean()]
    assert abs(rows[0] - rows[1]) < 2  # level after alignment
    unaligned = quality.align_crop(eyes, face([150, 150, 250, 250]), 220)
    rows = [
        np.argwhere(unaligned[:, :110, 0] > 127)[:, 0].mean(),
        np.argwhere(unaligned[:, 110:, 0] > 127)[:, 0].mean(),
    ]
    assert rows[1] - rows[0] > 20  # without landmarks the tilt stays


def test_the_crop_size_follows_the_longer_side_of_the_face_box():
    rgb = np.zeros((400, 400, 3), np.uint8)
    rgb[180:221, 180:221] = 255  # 40 px
    for box in ([150, 100, 250, 300], [100, 150, 300, 250]):  # 100 x 200 and 200 x 100: 440 px of context
        white = np.argwhere(quality.align_crop(rgb, face(box), 220)[..., 0] > 127)
        assert 19 <= np.ptp(white[:, 0]) <= 22 and 19 <= np.ptp(white[:, 1]) <= 22


def test_a_large_face_is_shrunk_with_area_averaging_not_sampled():
    stripes = np.zeros((1000, 1000, 3), np.uint8)
    stripes[:, ::2] = 255  # finer than the crop can show: it must come out as even grey, not as new stripes
    crop = quality.align_crop(stripes, face([300, 300, 700, 700]), 100).astype(np.float32)  # 880 px of context
    assert crop.std() < 12 and abs(crop.mean() - 127.5) < 3  # sampled: about 74
    assert quality.align_crop(stripes, face([300, 300, 700, 700]), 600).std() < 50  # shrunk a little: 37 vs 74
    coarse = np.zeros_like(stripes)
    coarse[:, np.arange(1000) // 20 % 2 == 0] = 255  # 5 px stripes in the crop: kept
    assert quality.align_crop(coarse, face([300, 300, 700, 700]), 110).std() > 60


ASTRONAUT = ([179, 83, 266, 170], [(203.5, 102), (246, 104.5), (224, 135)])  # dlib's box, eyes and nose: 3.4 deg


def _change(crop: np.ndarray, where: np.ndarray, away: np.ndarray) -> tuple[float, float, float]:
    """Mean gradient magnitude over `where`, and its parts along the photo's edge and away from it (`away`: the
    distance past the edge, whose gradient points away)."""
    g = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    dx, dy = cv2.Sobel(away, cv2.CV_32F, 1, 0), cv2.Sobel(away, cv2.CV_32F, 0, 1)
    norm = np.hypot(dx, dy) + 1e-6
    along, outward = np.abs(gx * dy - gy * dx) / norm, np.abs(gx * dx + gy * dy) / norm
    return float(np.hypot(gx, gy)[where].mean()), float(along[where].mean()), float(outward[where].mean())


def test_a_crop_past_the_photos_edge_is_padded_softly_not_with_smeared_edge_pixels():
    """The astronaut's photo cut 30 px above and 40 px left of her face box: her crop reaches past the cut's top and
    left edges. Replicated edge pixels are streaks there: they change along the edge 10x more than away from it."""
    a, (top, left), size = photos.astronaut(), (53, 139), 256
    cut = np.ascontiguousarray(a[top : top + 220, left : left + 200])
    tight = face(np.array(ASTRONAUT[0]) - [left, top, left, top], np.array(ASTRONAUT[1]) - [left, top])
    crop, whole = quality.align_crop(cut, tight, size), quality.align_crop(a, face(*ASTRONAUT), size)
    inside = quality.photo_mask(cut.shape, tight, size)
    assert quality.photo_mask(a.shape, face(*ASTRONAUT), size).min() == 1.0  # the whole photo fills its crop
    assert 0.15 < (inside == 0).mean() < 0.19  # 1 - (191 - 12)(191 - 22) / 191^2 of the 191 px square, turned
    away = cv2.distanceTransform((inside < 1).astype(np.uint8), cv2.DIST_L2, 5)
    past = away >= 4
    deep = cv2.distanceTransform((inside == 1).astype(np.uint8), cv2.DIST_L2, 5) >= 4
    assert np.abs(crop.astype(int) - whole)[deep].max() <= 1  # inside the photo: what the uncut photo shows
    detail, along, outward = _change(crop, past, away)
    assert along < 2.5 * outward  # no streaks (replicated edges: 36.2 along, 3.6 away; this backdrop 7.1 and 4.6)
    assert detail < 0.3 * _change(crop, deep, away)[0]  # soft: 0.17x the photo's detail (replicated edges: 0.67x)


def test_face_region_is_the_middle_of_the_crop():
    crop = np.arange(220 * 220).reshape(220, 220)
    region = quality.face_region(crop)
    assert region.shape == (100, 100) and region[0, 0] == crop[60, 60]


def test_sharpness_is_0_for_flat_higher_for_detail_and_lower_when_blurred():
    flat = np.full((200, 200, 3), 128, np.uint8)
    sharp = photos.astronaut()[:300, 100:400]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 4)
    assert quality.sharpness(flat) == 0.0
    assert 0 < quality.sharpness(blurred) < quality.sharpness(sharp) < 1
    assert quality.sharpness(cv2.resize(sharp, (600, 600))) == pytest.approx(
        quality.sharpness(sharp), abs=0.15
    )  # any size


@pytest.mark.parametrize("level, score", [(0, 0.0), (255, 0.0), (128, 0.996), (64, 0.502), (191, 0.502)])
def test_exposure_is_1_at_mid_grey_and_0_at_black_or_white(level, score):
    assert quality.exposure(np.full((50, 50, 3), level, np.uint8)) == pytest.approx(score, abs=0.001)


def test_frontalness_from_landmarks_is_1_with_the_nose_between_the_eyes():
    img = np.zeros((10, 10, 3), np.uint8)
    assert quality.frontalness(face([0, 0, 1, 1], [(0, 0), (20, 0), (10, 9)]), img) == 1.0
    assert quality.frontalness(face([0, 0, 1, 1], [(0, 0), (20, 0), (15, 9)]), img) == pytest.approx(0.5)
    assert quality.frontalness(face([0, 0, 1, 1], [(0, 0), (20, 0), (40, 9)]), img) == 0.0  # turned away
    assert quality.frontalness(face([0, 0, 1, 1], [(5, 0), (5, 0), (5, 9)]), img) == 1.0  # eyes together: no /0
    assert quality.frontalness(face([0, 0, 1, 1], [(100, 0), (120, 0), (115, 9)]), img) == pytest.approx(0.5)


def test_frontalness_without_landmarks_is_left_right_symmetry():
    half = photos.astronaut()[100:300, 150:250]
    mirrored = np.concatenate([half, half[:, ::-1]], axis=1)
    one_sided = np.concatenate([half, np.zeros_like(half)], axis=1)
    none = face([0, 0, 1, 1])
    assert quality.frontalness(none, mirrored) == pytest.approx(1.0, abs=0.01)
    assert quality.frontalness(none, one_sided) == 0.0  # the halves anti-correlate
    assert 0.1 < quality.frontalness(none, photos.astronaut()[100:300, 150:350]) < 0.3  # a face seen at an angle
    assert quality.frontalness(none, np.full((20, 20, 3), 7, np.uint8)) == 0.0  # nothing to compare


def test_dhash_tells_near_copies_from_other_photos():
    a = photos.astronaut()
    brighter = np.clip(a.astype(np.int16) + 12, 0, 255).astype(np.uint8)
    other = a[::-1]
    h = quality.dhash(a)
    assert 0 <= h < 2**64 and quality.dhash(a.copy()) == h
    assert quality.hamming(h, quality.dhash(brighter)) <= 4
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 40, a.shape), 0, 255).astype(np.uint8)
    assert quality.hamming(h, quality.dhash(noisy)) <= 4  # averaged over blocks, not read off single pixels
    assert quality.dhash(np.full((64, 64, 3), 90, np.uint8)) == 0  # no neighbour brighter
    assert quality.hamming(h, quality.dhash(other)) > 16
    assert quality.hamming(0b1011, 0b0001) == 2 and quality.hamming(5, 5) == 0
    bits = np.tile(np.array([90, 200, 150, 250, 100, 180, 120, 240, 60], np.uint8), (8, 1))  # up, down, up, ...
    assert quality.dhash(np.repeat(bits[..., None], 3, axis=2)) == int("10101010" * 8, 2)
