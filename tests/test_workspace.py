"""The data folder's layout, user ids, atomic writes and the free-space check: fast, no model."""

import hashlib
import json
import os
import shutil
from collections import namedtuple

import pytest

from easyphoto_app import workspace
from easyphoto_app.errors import UserError
from easyphoto_app.workspace import (
    Workspace,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    ensure_free_space,
    free_bytes,
    sha256_file,
    unique_path,
    validate_user_id,
)


@pytest.mark.parametrize(
    "given, kept", [("anna_2024", "anna_2024"), ("  Bo-1\n", "Bo-1"), ("x", "x"), ("y" * 64, "y" * 64)]
)
def test_a_good_user_id_comes_back_without_its_spaces(given, kept):
    assert validate_user_id(given) == kept


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_an_empty_user_id_is_refused_as_empty(empty):
    with pytest.raises(UserError, match="User id is empty"):
        validate_user_id(empty)


def test_a_refused_user_id_is_quoted_in_its_message():
    with pytest.raises(UserError, match=r"User id 'ann\.a' is not allowed.*1-64 characters"):
        validate_user_id("ann.a")


def test_every_path_of_a_user_is_where_design_md_puts_it(tmp_path):
    ws = Workspace(str(tmp_path))
    layout = {
        ws.users_dir: "users",
        ws.loras_dir: "loras",
        ws.exports_dir: "exports",
        ws.logs_dir: "logs",
        ws.models_dir: "models",
        ws.jobs_dir: "jobs",
        ws.templates_dir: "templates",
        ws.user_dir("ann"): "users/ann",
        ws.photos_dir("ann"): "users/ann/photos",
        ws.faces_dir("ann"): "users/ann/faces",
        ws.lora_work_dir("ann"): "users/ann/lora",
        ws.ddpo_dir("ann"): "users/ann/ddpo_weights",
        ws.job_events("train", "ann"): "users/ann/lora/events.jsonl",
        ws.job_events("rl", "ann"): "users/ann/ddpo_weights/events.jsonl",
        ws.face_lora("ann"): "loras/ann.safetensors",
        ws.ddpo_lora("ann"): "loras/ddpo_ann.safetensors",
        ws.outputs_dir("ann"): "outputs/ann",
    }
    assert {path.relative_to(tmp_path).as_posix(): want for path, want in layout.items()} == {
        v: v for v in layout.values()
    }


@pytest.mark.parametrize(
    "path_of", [Workspace.user_dir, Workspace.face_lora, Workspace.ddpo_lora, Workspace.outputs_dir]
)
def test_no_path_is_made_from_a_bad_user_id(tmp_path, path_of):
    with pytest.raises(UserError):
        path_of(Workspace(tmp_path), "../escape")


def test_users_are_the_valid_folders_in_order(tmp_path):
    ws = Workspace(tmp_path)
    assert ws.list_users() == []
    for name in ("zoe", "Anna", "bo_1", "bad name", ".hidden"):
        (ws.users_dir / name).mkdir(parents=True)
    (ws.users_dir / "file_not_user").write_text("x")
    assert ws.list_users() == ["Anna", "bo_1", "zoe"]


def test_an_unknown_user_is_refused_with_how_to_add_them_and_who_exists(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(UserError, match=r"No user 'ann' yet.*prepare --user ann PHOTOS.*Known users: none yet"):
        ws.require_user("ann")
    ws.user_dir("zoe").mkdir(parents=True)
    ws.user_dir("bo").mkdir(parents=True)
    with pytest.raises(UserError, match="Known users: bo, zoe"):
        ws.require_user("ann")
    assert ws.require_user(" zoe ") == "zoe"


def test_deleting_a_user_removes_their_files_and_nobody_elses(tmp_path):
    ws = Workspace(tmp_path)
    for user in ("ann", "bo"):
        (ws.photos_dir(user)).mkdir(parents=True)
        (ws.outputs_dir(user) / "2026-01-01").mkdir(parents=True)
        ws.loras_dir.mkdir(exist_ok=True)
        ws.face_lora(user).write_bytes(b"l")
        ws.ddpo_lora(user).write_bytes(b"d")
        (ws.loras_dir / f"{user}.prev.safetensors").write_bytes(b"p")  # kept by a second training run
    ws.delete_user("ann")
    assert not ws.user_dir("ann").exists() and not ws.outputs_dir("ann").exists()
    assert not ws.face_lora("ann").exists() and not ws.ddpo_lora("ann").exists()
    assert sorted(p.name for p in ws.loras_dir.iterdir()) == [
        "bo.prev.safetensors",
        "bo.safetensors",
        "ddpo_bo.safetensors",
    ]
    assert ws.list_users() == ["bo"] and ws.face_lora("bo").exists() and ws.ddpo_lora("bo").exists()
    assert ws.outputs_dir("bo").is_dir()
    ws.photos_dir("cy").mkdir(parents=True)
    ws.delete_user("cy")  # a user who never trained nor generated anything
    assert ws.list_users() == ["bo"]
    ws.delete_user("bo")
    with pytest.raises(UserError, match="No user 'bo'"):
        ws.delete_user("bo")


def test_only_paths_that_resolve_inside_the_data_folder_are_served(tmp_path):
    root = tmp_path / "data"
    (root / "outputs").mkdir(parents=True)
    (tmp_path / "secret.txt").write_text("s")
    os.symlink(tmp_path / "secret.txt", root / "outputs" / "link.png")
    ws = Workspace(root)
    assert ws.contains(root / "outputs" / "a.png") and ws.contains(root)
    assert not ws.contains(root / ".." / "secret.txt")
    assert not ws.contains(root / "outputs" / "link.png")
    assert not ws.contains(tmp_path / "data2" / "x.png")


def test_an_atomic_write_appears_whole_readable_by_all_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "new" / "folder" / "faces.json"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".faces.json.") and tmp.name.endswith(".json.tmp")
        assert not target.exists()
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert os.stat(target).st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["faces.json"]
    with atomic_path(target, suffix=".part") as tmp:
        assert tmp.name.endswith(".part")
        tmp.write_text("second")
    assert target.read_text() == "second"


def test_an_atomic_write_stopped_by_any_exception_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.safetensors"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]
    with pytest.raises(RuntimeError):  # the temp file already gone must not hide the real error
        with atomic_path(target) as tmp:
            tmp.unlink()
            raise RuntimeError("boom")


def test_json_is_written_indented_in_the_given_key_order(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"z": 1, "a": ["é"]})
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert text == json.dumps({"z": 1, "a": ["é"]}, indent=2) and list(json.loads(text)) == ["z", "a"]


Usage = namedtuple("Usage", "total used free")


def test_free_space_is_checked_on_the_nearest_folder_that_exists(tmp_path, monkeypatch):
    probed = []

    def usage(path):
        probed.append(path)
        return Usage(10 * 2**30, 9 * 2**30, 2**30)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    ensure_free_space(tmp_path / "not" / "yet", 2**30, "the LoRA")  # exactly enough is enough
    assert probed == [tmp_path]
    with pytest.raises(
        UserError,
        match=r"Not enough free disk space for the LoRA: need about 1\.5 GB, 1\.0 GB free "
        r"on the drive holding .*yet\. Free some space",
    ):
        ensure_free_space(tmp_path / "not" / "yet", 3 * 2**29, "the LoRA")
    ensure_free_space(tmp_path, 1, "x")
    assert probed[-1] == tmp_path


def test_free_bytes_reads_the_folder_itself_or_the_nearest_one_that_exists(tmp_path, monkeypatch):
    probed = []

    def usage(path):
        probed.append(path)
        return Usage(10, 10 - len(probed), len(probed))

    monkeypatch.setattr(shutil, "disk_usage", usage)
    assert free_bytes(str(tmp_path / "not" / "made")) == 1 and probed == [tmp_path]
    assert free_bytes(tmp_path / "not") == 2 and probed[-1] == tmp_path
    (tmp_path / "drive").mkdir()  # a folder that exists is read itself: it may be another drive's mount point
    assert free_bytes(tmp_path / "drive") == 3 and probed[-1] == tmp_path / "drive"


def test_a_file_hash_is_cached_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(workspace, "_hash_cache", {})
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * (3 << 20))  # more than one read chunk
    assert sha256_file(path) == hashlib.sha256(b"a" * (3 << 20)).hexdigest()
    assert sha256_file(path, 5) == hashlib.sha256(b"a" * ((3 << 20) - 5)).hexdigest()
    assert len(workspace._hash_cache) == 2
    workspace._hash_cache[next(iter(workspace._hash_cache))] = "cached"
    assert sha256_file(path) == "cached"  # a GB checkpoint is not read again
    assert sha256_file(path, cached=False) == hashlib.sha256(b"a" * (3 << 20)).hexdigest()  # RL's face-LoRA check
    path.write_bytes(b"b" * 10)
    assert sha256_file(path) == hashlib.sha256(b"b" * 10).hexdigest()


def test_hashing_a_big_file_reads_it_in_pieces_not_into_memory(tmp_path, monkeypatch):
    """A checkpoint is 2-4 GB: its hash must not need its size in RAM."""
    import tracemalloc

    monkeypatch.setattr(workspace, "_hash_cache", {})
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as fh:
        for _ in range(48):
            fh.write(b"\x01" * (1 << 20))
    tracemalloc.start()
    try:
        sha256_file(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MiB held to hash a 48 MiB file"


def test_a_free_name_is_the_name_asked_for_or_a_numbered_one_and_never_overwrites(tmp_path):
    folder = tmp_path / "out"
    assert unique_path(folder, "a.png") == folder / "a.png"  # the folder need not exist yet
    for n in range(4):  # four writes of one name: four files, each keeping what was written
        atomic_write_bytes(unique_path(folder, "a.png"), bytes([n]))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {
        "a.png": b"\x00",
        "a-1.png": b"\x01",
        "a-2.png": b"\x02",
        "a-3.png": b"\x03",
    }
    (folder / "notes").write_text("x")
    assert unique_path(folder, "notes") == folder / "notes-1"  # no suffix: the number ends the name
    assert unique_path(folder, "../notes") == folder / "notes-1"  # only ever inside the folder


def test_the_face_lora_is_required_in_one_sentence_that_says_how_to_get_it(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(UserError) as refused:
        ws.require_face_lora("ann")
    assert str(refused.value) == (
        "User 'ann' has no face LoRA yet: train it first (Photos & Training tab, or 'train --user ann')."
    )
    ws.face_lora("ann").parent.mkdir(parents=True)
    ws.face_lora("ann").write_bytes(b"lora")
    assert ws.require_face_lora("ann") == tmp_path / "loras" / "ann.safetensors"
    with pytest.raises(UserError, match="is not allowed"):
        ws.require_face_lora("../ann")
