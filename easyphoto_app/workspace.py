"""Where every file lives under the data dir, user-id checks, atomic writes, free names and file hashes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from easyphoto_app.errors import UserError

USER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def validate_user_id(user_id: str | None) -> str:
    user_id = (user_id or "").strip()
    if not user_id:
        raise UserError("User id is empty: use ASCII letters (a-z, A-Z), digits, '_' or '-' (e.g. anna_2024).")
    if not USER_ID_RE.match(user_id):
        raise UserError(
            f"User id {user_id!r} is not allowed: use only ASCII letters (a-z, A-Z; no accents), digits, '_' or '-' "
            "(1-64 characters); it names folders and files on every system."
        )
    return user_id


class Workspace:
    """Paths of the data dir (docs/design.md, 'Data layout')."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def users_dir(self) -> Path:
        return self.root / "users"

    @property
    def loras_dir(self) -> Path:
        return self.root / "loras"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    def user_dir(self, user_id: str) -> Path:
        return self.users_dir / validate_user_id(user_id)

    def photos_dir(self, user_id: str) -> Path:
        return self.user_dir(user_id) / "photos"

    def faces_dir(self, user_id: str) -> Path:
        return self.user_dir(user_id) / "faces"

    def lora_work_dir(self, user_id: str) -> Path:
        return self.user_dir(user_id) / "lora"

    def ddpo_dir(self, user_id: str) -> Path:
        return self.user_dir(user_id) / "ddpo_weights"

    def job_events(self, kind: str, user_id: str) -> Path:
        """The events stream of a user's train or rl job (beside its checkpoints)."""
        folders = {"train": self.lora_work_dir, "rl": self.ddpo_dir}
        return folders[kind](user_id) / "events.jsonl"

    def face_lora(self, user_id: str) -> Path:
        return self.loras_dir / f"{validate_user_id(user_id)}.safetensors"

    def ddpo_lora(self, user_id: str) -> Path:
        return self.loras_dir / f"ddpo_{validate_user_id(user_id)}.safetensors"

    def outputs_dir(self, user_id: str) -> Path:
        return self.root / "outputs" / validate_user_id(user_id)

    def list_users(self) -> list[str]:
        if not self.users_dir.is_dir():
            return []
        return sorted(p.name for p in self.users_dir.iterdir() if p.is_dir() and USER_ID_RE.match(p.name))

    def require_user(self, user_id: str) -> str:
        """The valid id of a user that exists, or the one refusal that says how to add them."""
        user_id = validate_user_id(user_id)
        if not self.user_dir(user_id).is_dir():
            raise UserError(
                f"No user '{user_id}' yet: add photos first (Photos & Training tab, or 'prepare --user "
                f"{user_id} PHOTOS'). Known users: {', '.join(self.list_users()) or 'none yet'}."
            )
        return user_id

    def require_face_lora(self, user_id: str, other_way: str = "") -> Path:
        """The user's face LoRA, or the one refusal that says how to get one (and `other_way`, a caller's
        alternative to it, after a semicolon)."""
        lora = self.face_lora(user_id)
        if not lora.exists():
            raise UserError(
                f"User '{user_id}' has no face LoRA yet: train it first (Photos & Training tab, or "
                f"'train --user {user_id}'){'; ' + other_way if other_way else ''}."
            )
        return lora

    def delete_user(self, user_id: str) -> None:
        user_id = self.require_user(user_id)
        shutil.rmtree(self.user_dir(user_id))
        shutil.rmtree(self.outputs_dir(user_id), ignore_errors=True)
        for lora in (self.face_lora(user_id), self.ddpo_lora(user_id)):
            for f in (lora, previous_lora(lora)):
                f.unlink(missing_ok=True)

    def contains(self, path: Path) -> bool:
        """True if path resolves inside the data dir (used before serving a file)."""
        try:
            Path(path).resolve().relative_to(self.root.resolve())
            return True
        except ValueError:
            return False


DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}  # no space left, or the user's quota spent


@contextlib.contextmanager
def refused_when_disk_full(folder: Path, what: str):
    """A write into `folder` that finds the disk full becomes one sentence naming the folder (the caller keeps the
    previous file and leaves no temporary one)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        raise UserError(
            f"The drive holding {folder} is full: {what} was not written (the previous one, if any, is "
            "kept). Free some space and try again."
        ) from exc


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str | None = None):
    """Yield a temp path beside target; on success it replaces target in one rename. On a failure (a full disk
    too: refused_when_disk_full) target is as it was and the temp path is gone."""
    target = Path(target)
    with refused_when_disk_full(target.parent, target.name):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=suffix or target.suffix + ".tmp"
        )
        os.close(fd)
        try:
            yield Path(tmp)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600; user files should read like any other
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def unique_path(folder: Path, name: str) -> Path:
    """folder/name, or the first of folder/<stem>-1<suffix>, -2, ... that does not exist: never another file."""
    name = Path(name).name
    stem, suffix = Path(name).stem, Path(name).suffix
    target, n = Path(folder) / name, 1
    while target.exists():
        target, n = Path(folder) / f"{stem}-{n}{suffix}", n + 1
    return target


_hash_cache: dict[str, str] = {}


def sha256_file(path: Path, offset: int = 0, cached: bool = True) -> str:
    """sha256 of a file from `offset` on, read in pieces; cached by path, size and mtime (a checkpoint is GBs).
    `cached=False` reads the bytes whatever the cache holds: for checking that a file did not change."""
    path = Path(path)
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{offset}"
    if key not in _hash_cache or not cached:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            fh.seek(offset)
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def previous_lora(lora: Path) -> Path:
    """Where a new run keeps the LoRA it will replace: <name>.prev.safetensors beside it."""
    return lora.with_name(lora.stem + ".prev" + lora.suffix)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(target: Path, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path, obj) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=False))


def free_bytes(path: Path) -> int:
    """Free space on the drive that holds (or will hold) path."""
    path = Path(path)
    probe = path if path.exists() else next((p for p in path.parents if p.exists()), Path("."))
    return shutil.disk_usage(probe).free


def no_space_message(path: Path, need_bytes: int, what: str, advice: str = "Free some space and try again.") -> str:
    free = free_bytes(path)
    size = lambda n: f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"  # noqa: E731
    return (
        f"Not enough free disk space for {what}: need about {size(need_bytes)}, {size(free)} free on the drive "
        f"holding {path}. {advice}"
    )


def ensure_free_space(path: Path, need_bytes: int, what: str) -> None:
    """Refuse before starting when the disk cannot hold what the job will write."""
    if free_bytes(path) < need_bytes:
        raise UserError(no_space_message(path, need_bytes, what))
