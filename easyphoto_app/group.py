"""Several people in one template: who sits on which face, and how a portrait records it.

A portrait has one main person (the user, on the chosen face or the largest) and may have others, each on a face of
their own, counted from the left from 0 as the preview numbers them. Faces nobody is given are kept as they are.
"""

from __future__ import annotations

import json
import re

from easyphoto_app.errors import UserError

FACE_SPEC = re.compile(r"\s*(\d+)\s*=\s*(\S+)\s*")


def parse_faces(specs: list[str]) -> list[tuple[int, str]]:
    """`--face` values ("0=anna") as (face, user) pairs, in the order given."""
    pairs = []
    for spec in specs:
        found = FACE_SPEC.fullmatch(spec)
        if not found:
            raise UserError(
                f"--face takes FACE=USER, a face's number (from 0, counted from the left) and whose face "
                f"it is, e.g. --face 0=anna --face 1=ben; got {spec!r}."
            )
        pairs.append((int(found[1]), found[2]))
    return pairs


def main_and_others(user: str | None, face_index: int, pairs: list[tuple[int, str]]) -> tuple[str, int, dict]:
    """(the main person, their face (-1: the largest), {face: user} of the others). Without a main person, the
    first pair is the main one."""
    if not user:
        if not pairs:
            raise UserError(
                "Say whose face to paint: a user (--user ID), or a user for each face (--face 0=anna --face 1=ben)."
            )
        (face_index, user), pairs = pairs[0], pairs[1:]
    others: dict[int, str] = {}
    for face, who in pairs:
        if face in others:
            raise UserError(f"Face {face} is given twice ({others[face]} and {who}): one person per face.")
        others[face] = who
    return user, face_index, others


def check_one_per_face(people: list[tuple[int, str]]) -> None:
    """Refuse a face given to two people (the main person's face is known only once the template's faces are)."""
    seen: dict[int, str] = {}
    for face, who in people:
        if face in seen:
            raise UserError(
                f"Face {face} is given to both {seen[face]} and {who}: one person per face "
                "(choose another face for one of them)."
            )
        seen[face] = who


def a1111_value(text: str) -> str:
    """A value for A1111's parameters line: quoted (as A1111 quotes) when it holds a comma or a colon."""
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def fusion_field(on: bool, weight: float, unfused: list[int], faces: int) -> str:
    """How fusion went: 'off', 'before', 'before, after 0.5', '... ; not face 1', or 'none' (no face could be)."""
    if not on:
        done = "off"
    elif len(unfused) == faces:
        done = "none"
    else:
        done = "before" + (f", after {weight:g}" if weight > 0 else "")
        if unfused:
            done += f"; not face {', '.join(map(str, unfused))}"
    return f"Face fusion: {a1111_value(done)}"


def people_field(people: list[tuple[int, str]]) -> str:
    """Who is where: 'Template faces: "0: anna, 1: ben"', left to right."""
    return f"Template faces: {a1111_value(', '.join(f'{face}: {who}' for face, who in sorted(people)))}"


def likenesses_field(faces: list[int], scores: list) -> str:
    """Each person's likeness on their own face, left to right ('none': no face found there, '-': not scored)."""

    def shown(score) -> str:
        return "-" if score is None else "none" if score.likeness is None else f"{score.likeness:.2f}"

    pairs = sorted(zip(faces, scores), key=lambda p: p[0])
    return f"Face likenesses: {a1111_value(', '.join(f'{face}: {shown(s)}' for face, s in pairs))}"


def lowest(scores: list) -> object | None:
    """The score a portrait of several people is ranked and captioned by: the least alike of its scored faces (a face
    where none was found counts as least alike); None when no face was scored."""
    scored = [s for s in scores if s is not None]
    return min(scored, key=lambda s: -1.0 if s.likeness is None else s.likeness) if scored else None
