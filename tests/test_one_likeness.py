"""One likeness number per image: scored once when the image is made, written into its PNG info, and read by
every caption and the gallery with the same rounding (the issue saw 0.19 in a caption, 0.188 in the PNG info and
0.16 in the Gallery for one portrait). On the demo pipeline, in this process."""

import dataclasses

import photos
import pytest
from PIL import Image

from easyphoto_app import gallery
from easyphoto_app.faces.likeness import Score
from easyphoto_app.settings import GenerateConfig, PortraitConfig
from easyphoto_app.workspace import Workspace

GEN = GenerateConfig(prompt="a portrait", num_inference_steps=2, width=64, height=64, scheduler="DDIM")


class Scorer:
    """Stands in for the recognizer (the demo paints noise, no face): the given likenesses, in the order asked."""

    def __init__(self, values):
        self.values, self.calls = list(values), 0

    def score(self, image):
        self.calls += 1
        return Score(self.values[self.calls - 1], 0.0, 1, 0, "one face")


@pytest.fixture
def scorer(monkeypatch):
    """Unrounded likenesses as the scorer returns them; the gallery may not score any image again."""
    made = Scorer([0.188, 0.1649, 0.5551])

    def gallery_scored(ws, user):
        raise AssertionError("the gallery scored an image whose likeness is written")

    monkeypatch.setattr("easyphoto_app.faces.likeness.scorer_or_none", lambda ws, user: made)
    monkeypatch.setattr("easyphoto_app.faces.likeness.scorer_for", gallery_scored)
    return made


def assert_one_number(ws: Workspace, paths, captions, shown: list[str]):
    """Each file's PNG info, its caption, its gallery caption and its gallery line say the same number."""
    listed = {str(item.path): item for item in gallery.list_images(ws, "astro")}
    for path, caption, value in zip(paths, captions, shown, strict=True):
        with Image.open(path) as im:
            parameters, (w, h) = im.text["parameters"], im.size
        assert f", Face likeness: {value}, Version: " in parameters
        assert f", Size: {w}x{h}, " in parameters  # the saved file's own size
        assert caption.endswith(f" · likeness {value}")
        item = listed[str(path)]
        assert item.parameters == parameters
        assert gallery.caption(item) == f"{item.date} · likeness {value}"
        assert gallery.likeness_line(ws, "astro", item).startswith(f"Likeness to astro: **{value}** (")


def test_a_portraits_likeness_is_written_once_and_its_caption_and_the_gallery_read_it(
    rl_copy, demo_pipe, scorer, tmp_path
):
    from easyphoto_app.faces import get_backend
    from easyphoto_app.portrait import paint, plan

    ws = Workspace(rl_copy)
    template = photos.scene(tmp_path / "scene.jpg")
    gen = dataclasses.replace(GEN, num_inference_steps=4)  # 45% of them painted
    job = plan(ws, gen, PortraitConfig(num=2, seed=3), "astro", template, get_backend("auto", rl_copy))
    result = paint(demo_pipe, ws, job)
    assert scorer.calls == 2 and result.likeness == [0.19, 0.16]
    assert Image.open(result.paths[0]).size == (1200, 900)  # the template's size, not the 64 px painted
    assert_one_number(ws, result.paths, result.captions(), ["0.19", "0.16"])
    assert result.captions()[1] == f"#2 · seed {result.seeds[1]} · likeness 0.16"


def test_generate_and_compare_write_each_likeness_once_and_their_captions_and_the_gallery_read_it(
    rl_copy, demo_pipe, scorer
):
    from easyphoto_app.generate import compare, generate

    ws = Workspace(rl_copy)
    made = generate(demo_pipe, ws, GEN, user="astro")
    assert made.likeness == [0.19] and made.captions() == [f"seed {made.seeds[0]} · likeness 0.19"]
    pair = compare(demo_pipe, ws, GEN, "astro")
    assert scorer.calls == 3  # each image scored once, as it was made
    assert (pair.face_scores, pair.stacked_scores) == ([0.16], [0.56])
    paths, captions = zip(*pair.items())
    assert captions[0].startswith("face LoRA · seed") and captions[1].startswith("face + RL · seed")
    assert_one_number(ws, [made.paths[0], *paths], [made.captions()[0], *captions], ["0.19", "0.16", "0.56"])


def test_an_image_made_without_a_recognizer_has_no_likeness_written_or_shown(rl_copy, demo_pipe, monkeypatch):
    from easyphoto_app.generate import generate

    monkeypatch.setattr("easyphoto_app.faces.likeness.scorer_or_none", lambda ws, user: None)
    made = generate(demo_pipe, Workspace(rl_copy), GEN, user="astro")
    assert "Face likeness" not in made.parameters[0] and made.likeness == [None]
    assert made.captions() == [f"seed {made.seeds[0]}"]  # not "no face found": nobody looked
