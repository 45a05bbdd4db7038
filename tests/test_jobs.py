import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import gpu_lock_held, running_app

from easyphoto_app import jobs
from easyphoto_app.errors import BusyError, UserError
from easyphoto_app.workspace import Workspace, atomic_write_json


def test_closing_the_app_stops_its_job_with_a_checkpoint(home_copy):
    from gradio_client import Client

    from easyphoto_app.jobs import JobManager, pid_alive
    from easyphoto_app.workspace import Workspace

    with running_app(home_copy) as url:
        client = Client(url, verbose=False)
        manager = JobManager(Workspace(home_copy), [])
        client.predict("astro", 5000, 4, 4.0, 1e-4, 512, 1000, False, api_name="/train_start")
        assert manager.current() is None  # astro has a face LoRA: the first Start asks, and starts nothing
        client.predict("astro", 5000, 4, 4.0, 1e-4, 512, 1000, False, api_name="/train_start")
        job = manager.current()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(e["type"] == "progress" for e in manager.events(job)):
            time.sleep(0.2)
        assert pid_alive(job.pid)
    deadline = time.monotonic() + 60
    while pid_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(job.pid), "the training job outlived the app"
    done = [e for e in JobManager(Workspace(home_copy), []).events(job) if e["type"] == "done"]
    assert done and done[-1].get("stopped") and "Stopped at step" in done[-1]["message"]
    assert list((home_copy / "users" / "astro" / "lora").glob("checkpoint-*"))


def test_stop_asked_while_the_job_starts_is_kept_and_an_old_one_is_not(tmp_path):
    from easyphoto_app.jobs import Reporter

    events = tmp_path / "events.jsonl"
    stop = events.with_suffix(".stop")
    stop.touch()
    os.utime(stop, (1, 1))  # left by a run long ago
    assert not Reporter(events).should_stop() and not stop.exists()
    stop.touch()  # asked for now, after this process started
    assert Reporter(events).should_stop()


# --- the parts of a job the UI and the CLI share, fast: no model, children that only sleep ---


def test_a_reporter_appends_one_json_line_per_event_and_tells_its_listeners(tmp_path):
    heard = []
    r = jobs.Reporter(tmp_path / "new" / "events.jsonl", [heard.append])
    r.progress(2, 10, loss=0.5)
    r.metric(reward=1.0)
    r.log("hello", step=2)
    r.failed("out of memory")
    lines = (tmp_path / "new" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events == heard
    assert [{k: v for k, v in e.items() if k != "t"} for e in events] == [
        {"type": "progress", "step": 2, "total": 10, "loss": 0.5},
        {"type": "metric", "reward": 1.0},
        {"type": "log", "message": "hello", "step": 2},
        {"type": "failed", "message": "out of memory"},
    ]
    assert all(abs(e["t"] - time.time()) < 60 for e in events)
    done = jobs.Reporter(None)
    assert done.done("saved", path="x")["path"] == "x" and done.stop_path is None
    assert done.done()["message"] == ""
    assert not done.should_stop()


def test_stop_comes_from_the_flag_file_or_a_signal(tmp_path):
    import signal

    r = jobs.Reporter(tmp_path / "events.jsonl")
    assert r.stop_path == tmp_path / "events.stop" and not r.should_stop()
    r.stop_path.touch()
    assert r.should_stop()
    r.stop_path.unlink()
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        r.stop_on_signals()
        os.kill(os.getpid(), signal.SIGTERM)  # the terminal's Ctrl+C or a service manager: save, then stop
        deadline = time.monotonic() + 5
        while not r.should_stop() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert r.should_stop() and signal.getsignal(signal.SIGINT) == r.request_stop
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_in_a_terminal_the_bar_shows_the_step_the_unit_and_the_loss(monkeypatch):
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Terminal())
    listener = jobs.TqdmListener("Training")
    listener({"type": "progress", "step": 3, "total": 10, "loss": 0.25, "lr": 1, "eta_s": 7})
    drawn = sys.stderr.getvalue()
    assert "Training" in drawn and "3/10" in drawn and "step/s" in drawn, drawn
    assert "loss=0.25" in drawn and "eta_s=7" in drawn and "lr=" not in drawn
    assert not listener.bar.disable
    listener({"type": "failed", "message": "out of memory"})
    assert listener.bar.disable  # closed


def test_read_events_skips_a_torn_line_and_keeps_its_place(tmp_path):
    f = tmp_path / "e.jsonl"
    assert jobs.read_events(f, 7) == ([], 7)
    f.write_bytes(b'{"type": "log"}\n{"type": "pro\n{"type": "done"}\n{"type": "x')
    events, offset = jobs.read_events(f)
    assert events == [{"type": "log"}, {"type": "done"}] and offset == f.read_bytes().rfind(b"\n") + 1
    assert jobs.read_events(f, 16) == ([{"type": "done"}], offset)


def test_a_tqdm_bar_follows_progress_and_logs_go_above_it(capsys):
    listener = jobs.TqdmListener("Training")
    listener({"type": "log", "message": "before the bar"})
    listener({"type": "progress", "step": 3, "total": 10, "loss": 0.25, "lr": 1})
    bar = listener.bar
    assert (bar.total, bar.n) == (10, 3) and bar.disable  # no bar drawn into a log file; the events carry it
    listener({"type": "progress", "step": 4, "total": 10})
    assert listener.bar is bar and bar.n == 4
    listener({"type": "progress", "step": 1, "total": 5})  # a new phase with its own total: a new bar
    assert listener.bar is not bar and listener.bar.total == 5
    listener({"type": "done", "message": ""})
    assert "before the bar" in capsys.readouterr().out


def test_pid_alive_is_false_for_ended_and_zombie_processes():
    assert jobs.pid_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while jobs.pid_alive(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)  # not reaped yet: a zombie until wait()
    assert not jobs.pid_alive(child.pid)
    child.wait()
    assert not jobs.pid_alive(child.pid) and not jobs.pid_alive(2**22 + 7) and not jobs.pid_alive(-1)


def test_the_gpu_lock_notes_its_holder_and_leaves_nothing_behind(tmp_path):
    ws = Workspace(tmp_path / "not" / "made")  # the first job of a new data folder
    lock = jobs.GpuLock(ws, "rl", "ann")
    assert lock.holder() is None
    with lock:
        note = json.loads(lock.note_path.read_text())
        assert (note["pid"], note["kind"], note["user"]) == (os.getpid(), "rl", "ann")
        assert abs(note["started"] - time.time()) < 60
        assert lock.holder() is None  # this process is not in its own way
    assert not lock.note_path.exists() and lock.holder() is None


@pytest.mark.parametrize("note", ["{torn", {"kind": "rl"}, {"pid": -1}, [1, 2], "live"])
def test_a_note_without_the_os_lock_holds_nothing(tmp_path, note):
    """A note left by a killed job, torn or naming a live process (a reused pid) is no lock."""
    ws = Workspace(tmp_path)
    lock = jobs.GpuLock(ws, "train", "bo")
    lock.note_path.parent.mkdir(parents=True)
    note = {"pid": os.getppid(), "kind": "rl", "user": "ann"} if note == "live" else note
    lock.note_path.write_text(note if isinstance(note, str) else json.dumps(note))
    assert lock.holder() is None
    with lock:
        assert json.loads(lock.note_path.read_text())["user"] == "bo"


def test_the_gpu_lock_refuses_while_another_process_holds_it_and_is_free_once_it_is_killed(tmp_path):
    ws = Workspace(tmp_path)
    with gpu_lock_held(ws.root, "train", "bo") as other:
        note = jobs.GpuLock(ws, "rl", "ann").holder()
        assert (note["pid"], note["user"]) == (other.pid, "bo")
        with pytest.raises(BusyError) as refused:
            jobs.GpuLock(ws, "rl", "ann").__enter__()
        assert str(refused.value) == jobs.busy_message(note) and "(started " in str(refused.value)
        assert json.loads(ws.jobs_dir.joinpath("gpu.json").read_text()) == note  # left to its holder
        other.kill()
        other.wait()
        assert jobs.GpuLock(ws, "rl", "ann").holder() is None  # kill -9 freed it, at once
        with jobs.GpuLock(ws, "rl", "ann"):
            assert json.loads(ws.jobs_dir.joinpath("gpu.json").read_text())["user"] == "ann"


CONTENDER = Path(__file__).parent / "gpu_contender.py"


def wait_until(done, what: str, seconds: float = 120) -> None:
    """Poll `done`; the deadline only keeps a broken lock from hanging the suite."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {what}")
        time.sleep(0.01)


def start_at_once(data_dir: Path, gate: Path, users: list[str]) -> tuple[list[str], dict]:
    """One CLI `rl` starter per user, all pressing Start at the same moment. The users whose job ran, and each
    other user's (exit status, stderr); the jobs that ran are killed with kill -9 once every starter is through."""
    gate.mkdir()
    launcher = subprocess.Popen([sys.executable, str(CONTENDER), str(data_dir), str(gate), "0.3", *users])
    through = lambda u: (gate / f"ran-{u}").exists() or (gate / f"exit-{u}").exists()  # noqa: E731
    wait_until(lambda: all(map(through, users)) or launcher.poll() is not None, "every starter")
    ran = sorted(u for u in users if (gate / f"ran-{u}").exists())
    for user in ran:
        os.kill(int((gate / f"ran-{user}").read_text()), signal.SIGKILL)
    assert launcher.wait() == 0
    return ran, {
        u: (int((gate / f"exit-{u}").read_text()), (gate / f"err-{u}").read_text()) for u in users if u not in ran
    }


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="the starters are forks of one prepared process")
def test_eight_starters_at_once_run_one_job_and_a_killed_holder_frees_the_gpu_at_once(tmp_path):
    """20 rounds of 8 simultaneous starts; each round's job is killed with kill -9 and the next round starts at
    once. The starters widen the gap between judging a lock stale and removing it: a lock that reads its file to
    judge staleness lets two or more jobs run here every time."""
    ws = Workspace(tmp_path / "data")
    users = [f"u{i}" for i in range(8)]
    ws.loras_dir.mkdir(parents=True)
    for user in users:
        ws.faces_dir(user).mkdir(parents=True)
        ws.face_lora(user).write_bytes(b"a face LoRA")
    for round_ in range(20):
        ran, refused = start_at_once(ws.root, tmp_path / f"round-{round_}", users)
        assert len(ran) == 1, f"round {round_}: {ran} all ran"
        for code, err in refused.values():
            assert code == 2 and err.startswith(f"error: The RL job for '{ran[0]}' is already running (started "), err
            assert "Traceback" not in err
        assert jobs.GpuLock(ws, "rl", "u0").holder() is None


def test_twelve_hours_of_rl_events_plot_a_bounded_number_of_points(tmp_path):
    """720 epochs and a memory row every 2 s (21,600): the memory plot keeps at most 600 of them (its first, the
    last 150 at full resolution, the rest evenly thinned), every epoch's point, and reads the file incrementally."""
    from long_run_events import rl_events, write_events

    from easyphoto_app.ui.rl_tab import memory_series, reward_series

    written = rl_events(12 * 3600, 720)
    path = write_events(tmp_path / "events.jsonl", written[:5000])
    log = jobs.EventLog(path)
    assert log.refresh() and log.offset == path.stat().st_size and not log.refresh()
    with path.open("a") as fh:
        fh.write("".join(json.dumps(e) + "\n" for e in written[5000:]))
    assert log.refresh() and log.offset == path.stat().st_size
    memory = [e for e in written if e.get("kind") == "memory"]
    kept = [e for e in log.events() if e.get("kind") == "memory"]
    assert len(memory) == 21_600 and len(kept) <= 600 and kept[0] == memory[0] and kept[-150:] == memory[-150:]
    older = [memory.index(e) for e in kept[:-150]]
    assert len({b - a for a, b in zip(older, older[1:])}) == 1  # evenly spaced
    assert len(memory_series(log.events())) <= 4 * 600
    epochs = [e for e in log.events() if e.get("kind") == "epoch"]
    assert [e["epoch"] for e in epochs] == list(range(720))
    # training reward and face rate per epoch, evaluations, and the diversity line's placeholder (none in these events)
    assert len(reward_series(log.events())) == 720 * 2 + 72 + 1
    progress = [e for e in log.events() if e["type"] == "progress"]
    assert len(progress) <= 600 and progress[-1] == [e for e in written if e["type"] == "progress"][-1]
    whole = jobs.EventLog(path)
    whole.refresh()
    assert whole.events() == log.events()  # read in two parts or in one: the same points


def test_a_page_redraws_only_the_views_whose_events_came_and_each_page_follows_on_its_own(tmp_path):
    import gradio as gr

    from easyphoto_app.ui.job_view import Followers, view_values

    events = tmp_path / "events.jsonl"
    write_job(Workspace(tmp_path), events, [{"t": 1, "type": "metric", "kind": "memory", "rss_mb": 1}], 0, kind="rl")
    job = jobs.JobManager(Workspace(tmp_path), []).current()
    drawn = []
    views = [
        (None, lambda ev: drawn.append(("memory", len(ev))) or "m", {"memory"}),
        (None, lambda ev: drawn.append(("epoch", len(ev))) or "e", {"epoch"}),
        (None, lambda ev: drawn.append(("all", len(ev))) or "a"),
    ]
    pages = Followers(keep=2)
    page = pages.of(job, "tab-1")
    assert view_values(page, views) == ["m", "e", "a"]  # a new page draws everything
    assert drawn == [("memory", 1), ("epoch", 0), ("all", 1)]
    with events.open("a") as fh:
        fh.write(json.dumps({"t": 2, "type": "metric", "kind": "memory", "rss_mb": 2}) + "\n")
    drawn.clear()
    assert view_values(page, views)[::2] == ["m", "a"] and drawn == [("memory", 2), ("all", 2)]
    skipped = view_values(page, views)  # nothing new: nothing drawn, nothing sent
    assert drawn == [("memory", 2), ("all", 2)] and all(v == gr.skip() for v in skipped)
    assert pages.of(job, "tab-1") is page and pages.of(job, "tab-2") is not page
    pages.of(job, "tab-3")
    assert "tab-1" not in pages.by_session  # the oldest page is forgotten past `keep`
    job.offset = 5  # a new run in the same file
    assert pages.of(job, "tab-3").key == jobs.job_key(job)


def test_a_busy_message_names_the_job_the_user_and_when_it_started():
    started = time.mktime((2026, 1, 2, 9, 5, 0, 0, 0, -1))
    assert jobs.busy_message({"kind": "rl", "user": "ann", "started": started}) == (
        "The RL job for 'ann' is already running (started 09:05). Wait for it to finish or press Stop, then try again."
    )
    assert jobs.busy_message({"kind": "train", "user": "bo"}).startswith("The training job for 'bo' is already running")
    assert jobs.busy_message({"kind": "RL", "user": "bo"}).startswith("The RL job for 'bo'")  # as the CLI's lock says
    assert jobs.busy_message({}).startswith("The GPU job for '?' is already running")


def test_a_job_needs_its_user_and_what_came_before_it(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(UserError, match="No user 'ann'"):
        jobs.check_can_start(ws, "train", "ann")
    ws.faces_dir("ann").mkdir(parents=True)
    with pytest.raises(UserError, match="'ann' has no checked photos yet"):
        jobs.check_can_start(ws, "train", "ann")
    with pytest.raises(UserError, match=r"'ann' has no face LoRA yet: train it first .*'train --user ann'"):
        jobs.check_can_start(ws, "rl", "ann")
    (ws.faces_dir("ann") / "faces.json").write_text("{}")
    jobs.check_can_start(ws, "train", "ann")
    jobs.check_can_start(ws, "generate", "ann")
    ws.loras_dir.mkdir()
    ws.face_lora("ann").write_bytes(b"x")
    jobs.check_can_start(ws, "rl", "ann")


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_job(ws, events, lines, pid, **kw):
    events.parent.mkdir(parents=True, exist_ok=True)
    events.write_text("".join(json.dumps(e) + "\n" for e in lines))
    record = jobs.JobRecord(
        pid, kw.pop("kind", "train"), "ann", str(events), kw.pop("offset", 0), kw.pop("started", time.time()), **kw
    )
    atomic_write_json(ws.jobs_dir / "current.json", asdict(record))
    return record


def test_a_jobs_state_is_read_from_its_process_and_its_last_event(tmp_path):
    ws = Workspace(tmp_path)
    manager = jobs.JobManager(ws, [])
    assert manager.state() == "none" and manager.current() is None and not manager.stop()
    events = tmp_path / "e.jsonl"
    old = [{"type": "done"}]
    for lines, state in (
        ([{"type": "progress"}], "interrupted"),
        ([{"type": "done"}, {"type": "failed"}], "failed"),
        ([{"type": "failed"}, {"type": "done"}], "done"),
        ([{"type": "done", "stopped": True}], "stopped"),
    ):
        job = write_job(ws, events, old + lines, dead_pid(), offset=len(json.dumps(old[0])) + 1)
        assert manager.state() == state and manager.state(job) == state
        assert manager.running() is None
    write_job(ws, events, [], os.getpid())
    assert manager.state() == "running" and manager.running().pid == os.getpid()
    assert not manager.stop("rl") and not events.with_suffix(".stop").exists()  # another tab's Stop: not this job
    assert manager.stop("train") and events.with_suffix(".stop").exists()
    (ws.jobs_dir / "current.json").write_text('{"pid": 1}')  # an older record's shape
    assert manager.current() is None


def test_a_reused_pid_does_not_make_an_ended_job_look_alive(tmp_path):
    ws = Workspace(tmp_path)
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_job(ws, tmp_path / "e.jsonl", [{"type": "progress"}], later.pid, started=time.time() - 3600)
        manager = jobs.JobManager(ws, [])
        assert manager.running() is None and manager.state() == "interrupted"
        write_job(ws, tmp_path / "e.jsonl", [{"type": "progress"}], later.pid)
        assert manager.running().pid == later.pid and manager.state() == "running"
    finally:
        later.kill()
        later.wait()


def test_a_resumed_jobs_history_starts_where_the_first_run_began(tmp_path):
    ws = Workspace(tmp_path)
    manager = jobs.JobManager(ws, [])
    events = tmp_path / "e.jsonl"
    job = write_job(
        ws, events, [{"type": "metric", "n": 1}, {"type": "metric", "n": 2}], dead_pid(), offset=17, history_offset=0
    )
    assert [e["n"] for e in manager.events(job)] == [2] and [e["n"] for e in manager.history(job)] == [1, 2]
    job.history_offset = -1
    assert [e["n"] for e in manager.history(job)] == [2]


class FakePopen:
    """Starts nothing; records how the child would have been started."""

    calls = []

    def __init__(self, cmd, **kw):
        FakePopen.calls.append((cmd, kw))
        self.pid = dead_pid()

    def wait(self):
        return 0


def fake_popen(monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setattr(jobs, "subprocess", SimpleNamespace(**{**vars(subprocess), "Popen": FakePopen}))


def test_start_runs_the_cli_command_with_its_events_and_log_and_records_it(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    fake_popen(monkeypatch)
    FakePopen.calls.clear()
    events = ws.job_events("rl", "ann")
    events.parent.mkdir(parents=True)
    events.write_text('{"type": "done"}\n')
    manager = jobs.JobManager(ws, ["--data-dir", str(tmp_path), "--precision", "bf16"])
    job = manager.start("rl", "ann", events, ["--epochs", "3"])
    ((cmd, kw),) = FakePopen.calls
    assert cmd == [
        sys.executable,
        "-m",
        "easyphoto_app",
        "--data-dir",
        str(tmp_path),
        "--precision",
        "bf16",
        "rl",
        "--user",
        "ann",
        "--events",
        str(events),
        "--epochs",
        "3",
    ]
    assert kw["start_new_session"] and kw["stdin"] == subprocess.DEVNULL and kw["stderr"] == subprocess.STDOUT
    assert kw["stdout"].name == str(ws.jobs_dir / "rl-ann.log")
    assert manager.current() == job and (job.kind, job.user, job.offset, job.history_offset) == ("rl", "ann", 17, 17)
    assert job.log == str(ws.jobs_dir / "rl-ann.log") and abs(job.started - time.time()) < 60
    events.write_text(events.read_text() + '{"type": "metric"}\n')
    resumed = manager.start("rl", "ann", events, [], keep_history=True)
    assert (resumed.offset, resumed.history_offset) == (36, 17)  # the plots go on from the first run
    fresh = manager.start("rl", "ann", events, [])
    assert (fresh.offset, fresh.history_offset) == (36, 36)
    other = manager.start("train", "ann", ws.job_events("train", "ann"), [], keep_history=True)
    assert (other.offset, other.history_offset) == (0, 0)  # another job's history is not continued


def test_a_second_job_is_refused_while_one_runs_or_holds_the_gpu(tmp_path, monkeypatch):
    ws = Workspace(tmp_path)
    fake_popen(monkeypatch)
    manager = jobs.JobManager(ws, [])
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        write_job(ws, tmp_path / "e.jsonl", [{"type": "progress"}], sleeper.pid, kind="rl")
        with pytest.raises(BusyError, match="The RL job for 'ann' is already running"):
            manager.start("train", "bo", tmp_path / "b.jsonl", [])
        (ws.jobs_dir / "current.json").unlink()
        with gpu_lock_held(ws.root, "train", "cy"):
            with pytest.raises(BusyError, match="The training job for 'cy'"):  # a job started from a terminal
                manager.start("train", "bo", tmp_path / "b.jsonl", [])
    finally:
        sleeper.kill()
        sleeper.wait()
    manager.start("train", "bo", tmp_path / "b.jsonl", [])


def test_two_pages_pressing_start_at_once_start_one_job_and_the_other_hears_who_runs(tmp_path, monkeypatch):
    from types import SimpleNamespace

    children = []

    def sleeper(cmd, **kw):
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
        return children[-1]

    monkeypatch.setattr(jobs, "subprocess", SimpleNamespace(**{**vars(subprocess), "Popen": sleeper}))
    manager = jobs.JobManager(Workspace(tmp_path), [])
    both = threading.Barrier(2)
    said = []

    def press(kind):
        both.wait()
        try:
            said.append(manager.start(kind, "ann", tmp_path / f"{kind}.jsonl", []).kind)
        except BusyError as exc:
            said.append(str(exc))

    pages = [threading.Thread(target=press, args=(kind,)) for kind in ("train", "rl")]
    try:
        [page.start() for page in pages]
        [page.join() for page in pages]
    finally:
        [child.kill() or child.wait() for child in children]
    assert len(children) == 1 and manager.current().pid == children[0].pid
    ran = manager.current().kind
    assert sorted(said, key=len) == [ran, jobs.busy_message(asdict(manager.current()))]


@pytest.mark.parametrize("last", ["done", "failed"])
def test_a_job_that_said_it_ended_and_is_exiting_is_waited_for_not_refused(tmp_path, monkeypatch, last):
    ws = Workspace(tmp_path)
    fake_popen(monkeypatch)
    finishing = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    write_job(ws, tmp_path / "e.jsonl", [{"type": "progress"}, {"type": last}], finishing.pid)
    reaper = threading.Thread(target=finishing.wait)
    reaper.start()
    jobs.JobManager(ws, []).start("rl", "ann", tmp_path / "r.jsonl", [])  # refused (BusyError) had it not waited
    assert not jobs.pid_alive(finishing.pid)
    reaper.join()


def test_a_job_starts_in_a_data_folder_not_made_yet_and_on_windows_in_its_own_process_group(tmp_path, monkeypatch):
    from types import SimpleNamespace

    ws = Workspace(tmp_path / "new" / "data")
    fake_popen(monkeypatch)
    monkeypatch.setattr(jobs.subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200, raising=False)
    monkeypatch.setattr(jobs, "os", SimpleNamespace(**{**vars(os), "name": "nt"}))
    FakePopen.calls.clear()
    job = jobs.JobManager(ws, []).start("train", "ann", tmp_path / "else" / "where" / "events.jsonl", [])
    ((_, kw),) = FakePopen.calls
    assert kw["creationflags"] == 0x200 and "start_new_session" not in kw  # Ctrl+C in the app's console spares it
    assert Path(job.log).parent == ws.jobs_dir and Path(job.events).parent.is_dir()


@pytest.mark.parametrize("recorded, kept", [(-1, 5), (0, 0), (3, 3)])
def test_a_resume_keeps_the_history_start_of_the_run_it_resumes(tmp_path, monkeypatch, recorded, kept):
    """-1: a record from before history offsets, whose history starts at its own offset."""
    ws = Workspace(tmp_path)
    fake_popen(monkeypatch)
    events = ws.job_events("rl", "ann")
    write_job(ws, events, [{"type": "metric"}] * 3, dead_pid(), kind="rl", offset=5, history_offset=recorded)
    assert jobs.JobManager(ws, []).start("rl", "ann", events, [], keep_history=True).history_offset == kept
