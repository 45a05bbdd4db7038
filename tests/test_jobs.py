import time

from conftest import running_app


def test_closing_the_app_stops_its_job_with_a_checkpoint(home_copy):
    from gradio_client import Client

    from easyphoto_app.jobs import JobManager, pid_alive
    from easyphoto_app.workspace import Workspace

    with running_app(home_copy) as url:
        Client(url, verbose=False).predict("astro", 5000, 4, 4.0, 1e-4, 512, 1000, False, api_name="/train_start")
        manager = JobManager(Workspace(home_copy), [])
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
    import os

    from easyphoto_app.jobs import Reporter

    events = tmp_path / "events.jsonl"
    stop = events.with_suffix(".stop")
    stop.touch()
    os.utime(stop, (1, 1))  # left by a run long ago
    assert not Reporter(events).should_stop() and not stop.exists()
    stop.touch()  # asked for now, after this process started
    assert Reporter(events).should_stop()
