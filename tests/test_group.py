"""Several people in one template: who sits where, and what a portrait of them records."""

import pytest

from easyphoto_app import group
from easyphoto_app.errors import UserError
from easyphoto_app.faces.likeness import Score


def test_faces_given_on_the_command_line_become_a_main_person_and_the_others():
    pairs = group.parse_faces(["0=anna", " 2 = ben", "3=anna"])
    assert pairs == [(0, "anna"), (2, "ben"), (3, "anna")]  # one person may sit twice (a mirror, twins)
    assert group.main_and_others(None, -1, pairs) == ("anna", 0, {2: "ben", 3: "anna"})
    assert group.main_and_others("cleo", -1, pairs) == ("cleo", -1, {0: "anna", 2: "ben", 3: "anna"})
    assert group.main_and_others("cleo", 1, []) == ("cleo", 1, {})


@pytest.mark.parametrize("spec", ["0:anna", "anna", "-1=anna", "0=", "x=anna", "0=an na"])
def test_a_malformed_face_is_refused_with_an_example(spec):
    with pytest.raises(UserError, match=r"--face takes FACE=USER.*--face 0=anna --face 1=ben"):
        group.parse_faces([spec])


def test_one_person_per_face():
    with pytest.raises(UserError, match="Face 1 is given twice"):
        group.main_and_others("cleo", -1, [(1, "anna"), (1, "ben")])
    with pytest.raises(UserError, match="Face 2 is given to both anna and ben"):
        group.check_one_per_face([(2, "anna"), (0, "cleo"), (2, "ben")])
    group.check_one_per_face([(2, "anna"), (0, "anna")])
    with pytest.raises(UserError, match="Say whose face to paint"):
        group.main_and_others(None, -1, [])


def score(likeness):
    return Score(likeness, None if likeness is None else 0.0, 1, 0, "")


def test_a_portrait_of_several_people_is_ranked_by_its_least_alike_face():
    assert group.lowest([score(0.9), score(0.4), score(0.7)]).likeness == 0.4
    assert group.lowest([score(0.9), None]).likeness == 0.9  # a person without a recognizer is not scored
    assert group.lowest([score(0.9), score(None)]).likeness is None  # no face found there: the least alike
    assert group.lowest([None, None]) is None


def test_the_portraits_fields_say_who_is_where_and_how_fusion_went():
    assert group.people_field([(3, "ben"), (0, "anna")]) == 'Template faces: "0: anna, 3: ben"'
    assert group.likenesses_field([3, 0], [score(0.4), score(None)]) == 'Face likenesses: "0: none, 3: 0.40"'
    assert group.likenesses_field([0, 1], [score(0.556), None]) == 'Face likenesses: "0: 0.56, 1: -"'
    assert group.fusion_field(True, 0.5, [], 1) == 'Face fusion: "before, after 0.5"'
    assert group.fusion_field(True, 0.0, [], 2) == "Face fusion: before"
    assert group.fusion_field(True, 1.0, [2], 2) == 'Face fusion: "before, after 1; not face 2"'
    assert group.fusion_field(True, 1.0, [0, 2], 2) == "Face fusion: none"
    assert group.fusion_field(False, 0.5, [0], 1) == "Face fusion: off"
