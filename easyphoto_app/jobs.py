"""Long jobs: an event stream (JSON lines), a one-GPU-job lock, and child processes.

A job is the CLI command itself (`train`, `rl`, ...) run as a child process. It
writes events to a JSON-lines file; the UI and the CLI's tqdm bar are two readers
of the same stream. Stop is a flag file the job checks between steps, so it can
save before it ends (this also works on Windows, where signals are awkward).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from easyphoto_app.errors import BusyError, UserError
from easyphoto_app.lora_io import complete_checkpoints
from easyphoto_app.workspace import Workspace, atomic_write_json, previous_lora

EventListener = Callable[[dict], None]


class Reporter:
    """What core functions report through: progress, metrics, logs, done / failed."""

    def __init__(self, events_path: Path | None = None, listeners: list[EventListener] | None = None):
        self.events_path = Path(events_path) if events_path else None
        self.listeners = list(listeners or [])
        self._stop_requested = False
        if self.events_path:
            self.events_path.parent.mkdir(parents=True, exist_ok=True)
            self._clear_stale_stop()

    def _clear_stale_stop(self) -> None:
        """Forget a Stop meant for an earlier run, but keep one asked for while this process was starting."""
        import psutil

        try:
            if self.stop_path.stat().st_mtime < psutil.Process().create_time():
                self.stop_path.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    @property
    def stop_path(self) -> Path | None:
        return self.events_path.with_suffix(".stop") if self.events_path else None

    def emit(self, event_type: str, **fields) -> dict:
        event = {"t": round(time.time(), 3), "type": event_type, **fields}
        if self.events_path:
            with open(self.events_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(event) + "\n")
        for listener in self.listeners:
            listener(event)
        return event

    def progress(self, step: int, total: int, **fields):
        return self.emit("progress", step=step, total=total, **fields)

    def metric(self, **fields):
        return self.emit("metric", **fields)

    def log(self, message: str, **fields):
        return self.emit("log", message=message, **fields)

    def warning(self, code: str, message: str):
        """A condition the user should act on (e.g. RL that cannot learn), in words, with a code that tests read."""
        return self.emit("warning", code=code, message=message)

    def done(self, message: str = "", **fields):
        return self.emit("done", message=message, **fields)

    def failed(self, message: str, **fields):
        return self.emit("failed", message=message, **fields)

    def request_stop(self, *_):
        self._stop_requested = True

    def should_stop(self) -> bool:
        return self._stop_requested or bool(self.stop_path and self.stop_path.exists())

    def stop_on_signals(self):
        """Ctrl+C / SIGTERM ask the job to save and stop instead of dying mid-step."""
        signal.signal(signal.SIGINT, self.request_stop)
        if hasattr(signal, "SIGTERM"):
            signal.signal(signal.SIGTERM, self.request_stop)


def download_progress(
    reporter: Reporter, every_s: float = 1.0, what: str = "the base model"
) -> Callable[[int, int], None]:
    """A download's bytes as progress events in whole MB, at most one every `every_s` seconds and the last: a job's
    panel shows `what` (several GB) arriving instead of 'waiting to start'."""
    last = [float("-inf")]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= every_s or done >= total:
            last[0] = now
            reporter.progress(done // 2**20, max(total // 2**20, 1), phase=f"downloading {what} (MB)")

    return report


class TqdmListener:
    """Renders progress events as a tqdm bar on the console."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None
        self._lock = threading.Lock()

    def __call__(self, event: dict):
        with self._lock:
            self._show(event)

    def _show(self, event: dict):
        from tqdm import tqdm

        if event["type"] == "progress":
            if self.bar is None or self.bar.total != event["total"]:
                # disable=None: no bar when output is not a terminal (a job's log file); events carry progress
                self.bar = tqdm(total=event["total"], desc=self.desc, unit="step", dynamic_ncols=True, disable=None)
            self.bar.n = event["step"]
            self.bar.refresh()
            shown = {k: v for k, v in event.items() if k in ("loss", "reward", "eta_s", "it_s")}
            self.bar.set_postfix(shown, refresh=True)
        elif event["type"] in ("log", "warning"):
            prefix = "warning: " if event["type"] == "warning" else ""
            (self.bar.write if self.bar else print)(prefix + event["message"])
        elif event["type"] in ("done", "failed") and self.bar is not None:
            self.bar.close()


def read_events(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset`, and the new offset (partial lines wait)."""
    path = Path(path)
    if not path.exists():
        return [], offset
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a torn line from a killed writer
    return events, offset + end


class Thinned:
    """A series held to at most `cap` points however long it grows: the newest `recent` at full resolution, the
    older ones evenly thinned (every 2nd, 4th, 8th... point: the stride doubles each time they fill their share),
    the first point always kept."""

    def __init__(self, cap: int = 1000, recent: int = 200):
        self.recent: deque = deque()
        self.older: list = []
        self.recent_cap, self.older_cap = recent, cap - recent
        self.stride, self.aged = 1, 0

    def add(self, point) -> None:
        self.recent.append(point)
        if len(self.recent) > self.recent_cap:
            self._age(self.recent.popleft())

    def _age(self, point) -> None:
        if self.aged % self.stride == 0:
            self.older.append(point)
        self.aged += 1
        if len(self.older) >= self.older_cap:
            self.older, self.stride = self.older[::2], self.stride * 2

    def points(self) -> list:
        return self.older + list(self.recent)


def channel_of(event: dict) -> str:
    """What a view may depend on: a metric's kind (memory, epoch, eval, validation), else the event's type."""
    return event.get("kind") or event.get("type", "")


class EventLog:
    """The events of a file from a byte offset on, read incrementally: refresh() parses only what was appended since
    the last call. They are held by channel (channel_of); the many (progress, memory samples every 2 s) are thinned
    (Thinned), logs keep their last LOGS, the rest (epochs, evaluations, warnings, the end) are kept whole. So a
    view costs the same in hour 12 of a run as in hour 1."""

    LOGS = 200
    POINTS, RECENT = 600, 150  # a plot is about 600 px wide; 150 memory rows are its last 5 minutes

    def __init__(self, path: Path, offset: int = 0):
        self.path, self.offset = Path(path), offset
        self.channels: dict = {
            "progress": Thinned(self.POINTS, self.RECENT),
            "memory": Thinned(self.POINTS, self.RECENT),
            "log": deque(maxlen=self.LOGS),
        }

    def refresh(self) -> set[str]:
        """Read what was appended; the channels that got events."""
        new, self.offset = read_events(self.path, self.offset)
        for event in new:
            held = self.channels.setdefault(channel_of(event), [])
            (held.add if isinstance(held, Thinned) else held.append)(event)
        return {channel_of(e) for e in new}

    def events(self, channels=None) -> list[dict]:
        """The events held, of the given channels (all by default), each channel in the order written (a view
        filters by type or kind, so channels need no interleaving)."""
        held = [self.channels[c] for c in (self.channels if channels is None else channels) if c in self.channels]
        return [e for h in held for e in (h.points() if isinstance(h, Thinned) else h)]


class JobFollower:
    """One open page's reading of one job: the events of its run (the status line) and of its plotted history (a
    resumed run continues the curves of the run it resumed), each read incrementally."""

    def __init__(self, job: JobRecord):
        self.key = job_key(job)
        self.run = EventLog(Path(job.events), job.offset)
        start = job.history_offset if job.history_offset >= 0 else job.offset
        self.history = self.run if start == job.offset else EventLog(Path(job.events), start)
        self._fresh = True

    def refresh(self) -> set[str] | None:
        """Read what the job appended: the channels that got events (channel_of), None on the first read (all)."""
        changed = self.run.refresh()
        if self.history is not self.run:
            changed |= self.history.refresh()
        fresh, self._fresh = self._fresh, False
        return None if fresh else changed


def job_key(job: JobRecord) -> tuple:
    return job.pid, job.events, job.offset, job.history_offset


def pid_alive(pid: int, born_by: float | None = None) -> bool:
    """True while process `pid` runs; with `born_by` (a time it had started by), a process that was created later
    holds a reused pid and is not the one meant."""
    import psutil

    try:
        process = psutil.Process(pid)
        reused = born_by is not None and process.create_time() > born_by + 2  # + 2: boot time is rounded to 1 s
        return not reused and process.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):  # ValueError: a negative pid
        return False


@dataclass
class JobRecord:
    pid: int
    kind: str
    user: str
    events: str
    offset: int  # where this run's events start
    started: float
    log: str = ""
    history_offset: int = -1  # where the plotted history starts: a resumed run keeps the run it resumes (-1: offset)


def _live_note(note) -> bool:
    """A lock note written by a process that still runs (not by an earlier process with the same pid)."""
    if not isinstance(note, dict) or not isinstance(note.get("pid"), int):
        return False
    started = note.get("started")
    return pid_alive(note["pid"], started if isinstance(started, (int, float)) else None)


class GpuLock:
    """At most one GPU job (train / rl) at a time, across the UI and terminals.

    The operating system keeps the lock (filelock: flock / msvcrt), so a killed holder frees it at once and no
    starter can remove another's lock. Who holds it is in a note beside it, written once the lock is taken.
    """

    WAIT_S = 0.25  # how long a starter waits for the lock: outlasts another process's holder() probe (microseconds)

    def __init__(self, ws: Workspace, kind: str, user: str):
        self.path = ws.jobs_dir / "gpu.lock"
        self.note_path = ws.jobs_dir / "gpu.json"
        self.kind, self.user = kind, user
        self._lock = None

    def _os_lock(self, timeout: float):
        from filelock import FileLock

        self.path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(self.path, timeout=timeout, thread_local=False)

    def holder(self) -> dict | None:
        """The note of the job holding the lock, or None when it is free (or held by this process)."""
        from filelock import Timeout

        probe = self._os_lock(timeout=0)
        try:
            probe.acquire()
        except Timeout:
            note = self._note()
            return None if note.get("pid") == os.getpid() else note
        probe.release()
        return None

    def _note(self, tries: int = 20) -> dict:
        """The holder's note ({} if it has none). A holder that has just taken the lock may not have replaced its
        killed predecessor's note yet, so a note of a dead process is read again for a moment."""
        for _ in range(tries):
            try:
                note = json.loads(self.note_path.read_text())
            except (OSError, ValueError):
                note = None
            if _live_note(note):
                return note
            time.sleep(0.05)
        return {}

    def __enter__(self):
        from filelock import Timeout

        lock = self._os_lock(timeout=self.WAIT_S)
        try:
            lock.acquire()
        except Timeout:
            raise BusyError(busy_message(self._note())) from None
        self._lock = lock
        atomic_write_json(
            self.note_path, {"pid": os.getpid(), "kind": self.kind, "user": self.user, "started": time.time()}
        )
        return self

    def __exit__(self, *exc):
        self.note_path.unlink(missing_ok=True)  # ours: the lock is still held
        self._lock.release()
        self._lock = None


def check_can_start(ws: Workspace, kind: str, user: str) -> None:
    """What a job needs before it starts, as one refusal: the UI asks before starting the child (nothing is
    created for an unknown user), the CLI before it writes anything."""
    ws.require_user(user)
    if kind == "train" and not (ws.faces_dir(user) / "faces.json").exists():
        raise UserError(f"'{user}' has no checked photos yet: add photos first (Photos & Training tab).")
    if kind == "rl":
        ws.require_face_lora(user)


JOB_NAMES = {"train": "training", "rl": "RL"}  # the UI records a job by its command; the CLI locks with these


def previous_work(ws: Workspace, kind: str, user: str) -> str | None:
    """What a new run (not a Resume) would start over from, in words; None when there is nothing."""
    lora = ws.face_lora(user) if kind == "train" else ws.ddpo_lora(user)
    work = ws.lora_work_dir(user) if kind == "train" else ws.ddpo_dir(user)
    kept = f"a new run keeps it as {previous_lora(lora).name}"
    if lora.exists():
        written = time.strftime("%d %b %H:%M", time.localtime(lora.stat().st_mtime))
        return f"'{user}' already has {'a face' if kind == 'train' else 'an RL'} LoRA ({lora.name}, {written}): {kept}."
    if complete_checkpoints(work, "checkpoint" if kind == "train" else "epoch"):
        return f"'{user}' has an unfinished {JOB_NAMES[kind]} run: Resume continues it, a new run starts over."
    return None


def busy_message(info: dict) -> str:
    started = time.strftime("%H:%M", time.localtime(info.get("started", time.time())))
    kind = info.get("kind", "GPU")
    return (
        f"The {JOB_NAMES.get(kind, kind)} job for '{info.get('user', '?')}' is already running (started {started}). "
        "Wait for it to finish or press Stop, then try again."
    )


class JobManager:
    """Starts CLI commands as child processes and follows their events (used by the UI)."""

    def __init__(self, ws: Workspace, global_args: list[str]):
        self.ws, self.global_args = ws, list(global_args)
        self.record_path = ws.jobs_dir / "current.json"
        self._starting = threading.Lock()

    def current(self) -> JobRecord | None:
        """The job started last, if any (running or finished)."""
        try:
            return JobRecord(**json.loads(self.record_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError, TypeError):
            return None

    def running(self) -> JobRecord | None:
        job = self.current()
        return job if job and pid_alive(job.pid, job.started) else None

    def _wait_if_finishing(self, job: JobRecord, seconds: float = 15.0) -> None:
        """A job that has reported done/failed is only saving and exiting: wait for it rather than refuse."""
        if not any(e["type"] in ("done", "failed") for e in self.events(job)):
            return
        deadline = time.monotonic() + seconds
        while pid_alive(job.pid, job.started) and time.monotonic() < deadline:
            time.sleep(0.1)

    def start(self, kind: str, user: str, events: Path, args: list[str], keep_history: bool = False) -> JobRecord:
        """Start `kind` for `user` as a child process. keep_history (a Resume): its plots continue the curves of
        the run it resumes instead of starting empty. Two pages pressing Start at once: the second finds the
        first's job."""
        with self._starting:
            return self._start(kind, user, events, args, keep_history)

    def refuse_if_busy(self, kind: str, user: str) -> None:
        """The busy message when a job runs (this app's, or a terminal's that holds the GPU lock); a job that has
        reported done/failed and is only exiting is waited for."""
        job = self.running()
        if job:
            self._wait_if_finishing(job)
            job = self.running()
        if job:
            raise BusyError(busy_message(asdict(job)))
        other = GpuLock(self.ws, kind, user).holder()
        if other:
            raise BusyError(busy_message(other))

    def _start(self, kind: str, user: str, events: Path, args: list[str], keep_history: bool) -> JobRecord:
        self.refuse_if_busy(kind, user)
        events = Path(events)
        events.parent.mkdir(parents=True, exist_ok=True)
        offset = events.stat().st_size if events.exists() else 0
        log_path = self.ws.jobs_dir / f"{kind}-{user}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "easyphoto_app",
            *self.global_args,
            kind,
            "--user",
            user,
            "--events",
            str(events),
            *args,
        ]
        flags = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if os.name == "nt" else {"start_new_session": True}
        )
        with open(log_path, "ab") as log_fh:
            proc = subprocess.Popen(cmd, stdout=log_fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **flags)
        before = self.current()
        history = offset
        if keep_history and before and (before.kind, before.user, before.events) == (kind, user, str(events)):
            history = before.history_offset if before.history_offset >= 0 else before.offset
        record = JobRecord(proc.pid, kind, user, str(events), offset, time.time(), str(log_path), history)
        atomic_write_json(self.record_path, asdict(record))
        threading.Thread(target=proc.wait, daemon=True).start()  # reaps the child when it ends: no <defunct> left
        return record

    def stop(self, kind: str | None = None) -> bool:
        """Ask the running job (of this kind, if given) to save and stop. True if there was one."""
        job = self.running()
        if not job or (kind and job.kind != kind):
            return False
        Path(job.events).with_suffix(".stop").touch()
        return True

    def events(self, job: JobRecord) -> list[dict]:
        return read_events(Path(job.events), job.offset)[0]

    def history(self, job: JobRecord) -> list[dict]:
        """The events to plot: this run's, preceded by those of the runs it resumed."""
        return read_events(Path(job.events), job.history_offset if job.history_offset >= 0 else job.offset)[0]

    def state(self, job: JobRecord | None = None, events: list[dict] | None = None) -> str:
        """running | done | stopped (by Stop, saved) | failed | interrupted (killed without a final event) | none.
        `events`: the job's, when the caller has read them already."""
        job = job or self.current()
        if job is None:
            return "none"
        if pid_alive(job.pid, job.started):
            return "running"
        final = [e for e in (self.events(job) if events is None else events) if e["type"] in ("done", "failed")]
        if not final:
            return "interrupted"
        return "stopped" if final[-1].get("stopped") else final[-1]["type"]
