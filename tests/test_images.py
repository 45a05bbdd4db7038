"""Loading what people upload: names, folders, sizes, modes, and the files that are not photos. Fast.
(The same files through the whole photo check: test_faces.py, test_newcomer.py.)"""

import numpy as np
import photos
import pytest
from PIL import Image

from easyphoto_app.errors import UserError
from easyphoto_app.faces import images


@pytest.mark.parametrize(
    "given, kept",
    [
        ("My Photo (1).JPG", "My_Photo_1.jpg"),
        ("../../etc/passwd", "passwd"),
        ("...", "photo"),
        ("été.png", "t.png"),
        ("x.P N G!", "x.png"),
        ("noext", "noext"),
        ("a" * 100 + ".jpeg", "a" * 80 + ".jpeg"),
        ("_-_.webp", "-.webp"),
    ],
)
def test_a_file_name_is_made_safe_and_stays_recognisable(given, kept):
    assert images.sanitize_name(given) == kept


def test_folders_give_their_photos_sorted_and_a_missing_path_is_named(tmp_path):
    (tmp_path / "set" / "sub").mkdir(parents=True)
    for name in ("b.JPG", "a.png", "sub/c.webp", "notes.txt", "d.heic"):
        (tmp_path / "set" / name).write_bytes(b"x")
    single = tmp_path / "chosen.dat"
    single.write_bytes(b"x")
    found = images.collect_files([tmp_path / "set", single])
    assert [p.relative_to(tmp_path).as_posix() for p in found] == [
        "set/a.png",
        "set/b.JPG",
        "set/d.heic",
        "set/sub/c.webp",
        "chosen.dat",
    ]
    with pytest.raises(UserError, match="gone.jpg does not exist"):
        images.collect_files([tmp_path / "gone.jpg"])


def test_what_is_not_a_photo_says_why_and_a_damaged_photo_is_kept(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("hello")
    good = photos.save(photos.astronaut(), tmp_path / "good.jpg")
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:2000])
    (tmp_path / "phone.heic").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)
    assert images.not_an_image(tmp_path / "empty.jpg") == "empty file"
    assert images.not_an_image(tmp_path / "notes.jpg") == "not an image file (or an unsupported format)"
    assert images.not_an_image(good) is None and images.not_an_image(tmp_path / "cut.jpg") is None
    assert images.not_an_image(tmp_path / "phone.heic") == images.HEIC_MISSING  # pillow-heif is not installed here
    with pytest.raises(images.BadImage, match="pillow-heif"):
        images.load_rgb(tmp_path / "phone.heic")
    with pytest.raises(images.BadImage, match="^empty file$"):
        images.load_rgb(tmp_path / "empty.jpg")
    with pytest.raises(images.BadImage, match=r"^not an image file \(or an unsupported format\)$"):
        images.load_rgb(tmp_path / "notes.jpg")
    with pytest.raises(images.BadImage, match=r"^damaged or truncated image \("):
        images.load_rgb(tmp_path / "cut.jpg")


def test_a_heif_is_known_by_its_bytes_whatever_its_name(tmp_path):
    for brand in (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1"):
        (tmp_path / "x.jpg").write_bytes(b"\0\0\0\x18ftyp" + brand + b"\0" * 8)
        assert images._is_heif(tmp_path / "x.jpg"), brand
    (tmp_path / "x.jpg").write_bytes(b"\0\0\0\x18ftypisom" + b"\0" * 8)  # an MP4
    assert not images._is_heif(tmp_path / "x.jpg")


def test_a_photo_loads_upright_rgb_and_no_larger_than_asked(tmp_path):
    src = photos.astronaut()
    arr = images.load_rgb(photos.save(src, tmp_path / "a.png"), max_side=200)
    assert arr.dtype == np.uint8 and arr.shape == (200, 200, 3)
    wide = images.load_rgb(photos.save(src[:256], tmp_path / "w.png"), max_side=128)
    assert wide.shape == (64, 128, 3)
    assert images.load_rgb(tmp_path / "a.png").shape == src.shape  # never enlarged
    turned = images.load_rgb(photos.exif_rotated(tmp_path / "r.jpg", src[:, :300]))
    assert turned.shape[:2] == (512, 300)  # stored on its side, shown upright


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    path = photos.save(photos.astronaut(), tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 512 * 512 - 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # load_rgb sets PIL's; put it back after
    with pytest.raises(images.BadImage, match=r"^image too large \(512x512 px\)$"):
        images.load_rgb(path)


def test_transparent_and_16_bit_photos_become_ordinary_rgb():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    out = np.asarray(images._to_rgb(rgba))
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [255, 255, 255]  # on white, not black
    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    assert np.asarray(images._to_rgb(pal)).tolist() == [[[255, 255, 255], [200, 0, 0]]]
    deep = Image.fromarray(np.array([[0, 1000, 4000]], dtype=np.uint16)).convert("I")
    assert np.asarray(images._to_rgb(deep))[0, :, 0].tolist() == [0, 63, 255]  # stretched to 8 bits
    dark = Image.fromarray(np.zeros((1, 2), np.uint16)).convert("I")
    assert np.asarray(images._to_rgb(dark)).max() == 0  # all black: no division by zero
    assert images._to_rgb(Image.new("L", (2, 2), 9)).mode == "RGB"


def test_resize_by_scale_or_to_a_shape_and_never_to_nothing():
    img = np.zeros((100, 60, 3), np.uint8)
    assert images.resize(img, 0.5).shape == (50, 30, 3)
    assert images.resize(img, 0.0001).shape == (1, 1, 3)
    assert images.resize(img, 1.0, shape=(10, 20)).shape == (10, 20, 3)


def test_with_pillow_heif_a_heic_photo_is_opened_through_it(tmp_path, monkeypatch):
    import sys
    from types import SimpleNamespace

    registered = []
    monkeypatch.setitem(sys.modules, "pillow_heif", SimpleNamespace(register_heif_opener=lambda: registered.append(1)))
    (tmp_path / "phone.jpg").write_bytes(b"\0\0\0\x18ftypheic" + b"\0" * 64)  # named .jpg by an app
    assert images.not_an_image(tmp_path / "phone.jpg") is None and registered == [1]
