"""What a new (and careless) user meets: refusals that say why, nothing stored or dropped without a word."""

import json
import threading
import time

import photos
import pytest
from conftest import run_cli


@pytest.mark.parametrize("prompt", ["a portrait <lora:abc", "a portrait <lora:astro:abc>", "<LORA:astro:1.0.5> x"])
def test_malformed_lora_tags_are_refused_not_drawn_as_text(prompt):
    from easyphoto_app.errors import UserError
    from easyphoto_app.generate import parse_lora_tags

    with pytest.raises(UserError, match="Malformed LoRA tag"):
        parse_lora_tags(prompt)
    assert parse_lora_tags("a <lora:astro:0.5> portrait") == ("a portrait", [("astro", 0.5)])


def test_a_prompt_longer_than_77_tokens_gets_a_note():
    from transformers import CLIPTokenizer

    from easyphoto_app.checkpoints import SD15_CONFIG
    from easyphoto_app.generate import prompt_note

    t = CLIPTokenizer.from_pretrained(SD15_CONFIG / "tokenizer")
    assert prompt_note(t, "a studio portrait, soft light") is None
    note = prompt_note(t, ", ".join(["a studio portrait with soft light"] * 20))
    assert note and "the model reads the first 77" in note


@pytest.mark.slow
def test_uploads_that_are_not_photos_or_already_there_are_reported_and_not_stored(tmp_path, astro_photos):
    data = tmp_path / "data"
    bad = photos.bad_files(tmp_path / "bad")
    copy = tmp_path / "again.jpg"
    copy.write_bytes(astro_photos[0].read_bytes())
    r = run_cli(
        data,
        "prepare",
        "--user",
        "a",
        *map(str, astro_photos),
        str(bad["text"]),
        str(bad["empty"]),
        str(copy),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout[r.stdout.index("{") :])
    reasons = {s["source"]: s["reason"] for s in record["skipped"]}
    assert reasons["notes.jpg"].startswith("not kept: not an image") and reasons["empty.jpg"] == "not kept: empty file"
    assert reasons["again.jpg"] == f"not kept: the same file as {astro_photos[0].name}, already added"
    stored = {p.name for p in (data / "users" / "a" / "photos").iterdir()}
    assert stored == {p.name for p in astro_photos}


def test_a_jpeg_named_heic_is_read_by_its_bytes(tmp_path):
    from easyphoto_app.faces.images import load_rgb, not_an_image

    path = tmp_path / "from_phone.heic"
    path.write_bytes(photos.save(photos.astronaut(), tmp_path / "x.jpg").read_bytes())
    assert not_an_image(path) is None and load_rgb(path).shape == (512, 512, 3)


def test_a_job_for_an_unknown_user_is_refused_and_leaves_no_folder(data_dir):
    for kind in ("rl", "train"):
        r = run_cli(data_dir, kind, "--user", "nobody")
        assert r.returncode == 2 and "No user 'nobody' yet" in r.stderr and "Traceback" not in r.stderr
    assert not (data_dir / "users" / "nobody").exists()


def test_a_refusal_inside_the_job_reads_as_a_refusal_not_a_crash(home_copy):
    """A training job whose model path is wrong: the child exits 2, and the job view says why."""
    from easyphoto_app.jobs import JobManager, pid_alive
    from easyphoto_app.ui.job_view import progress_html
    from easyphoto_app.workspace import Workspace

    ws = Workspace(home_copy)
    jobs = JobManager(ws, ["--data-dir", str(home_copy), "--model", str(home_copy / "no-such-model.safetensors")])
    job = jobs.start("train", "astro", ws.job_events("train", "astro"), ["--max-train-steps", "2"])
    deadline = time.monotonic() + 120
    while pid_alive(job.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert jobs.state(job) == "failed"
    text = progress_html(jobs.events(job), jobs.state(job))
    assert "Refused: Model path" in text and "does not exist" in text and "crashed" not in text


def test_a_resumed_job_keeps_the_plotted_history(home_copy):
    """Resume continues the loss curve of the run it resumes; a new run starts an empty one."""
    from easyphoto_app.jobs import JobManager, pid_alive
    from easyphoto_app.workspace import Workspace

    ws = Workspace(home_copy)
    jobs = JobManager(ws, ["--data-dir", str(home_copy)])
    events = ws.job_events("train", "astro")

    def run(*args, keep_history=False):
        job = jobs.start(
            "train",
            "astro",
            events,
            ["--max-train-steps", "4", "--checkpointing-steps", "2", "--rank", "4", *args],
            keep_history=keep_history,
        )
        while pid_alive(job.pid):
            time.sleep(0.2)
        return job

    first = run()
    resumed = run("--resume", keep_history=True)
    steps = [e["step"] for e in jobs.history(resumed) if e["type"] == "progress" and "loss" in e]
    assert steps[0] == 1 and len(jobs.history(resumed)) > len(jobs.events(resumed)) and first.offset < resumed.offset
    fresh = run()
    assert jobs.history(fresh) == jobs.events(fresh)


def test_banners_tell_the_truth_about_the_model(data_dir):
    """Offline, a hub model that is not downloaded is announced as such (and what happens instead); choosing the
    demo on purpose is not reported as a fallback, even when the same demo pipeline is reused."""
    from types import SimpleNamespace

    from easyphoto_app.pipeline_cache import PipelineCache
    from easyphoto_app.settings import load_settings
    from easyphoto_app.ui.common import model_banner

    s = load_settings(data_dir)
    s.app.model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    cache = PipelineCache()
    ctx = SimpleNamespace(settings=s, pipelines=cache, cancel_generate=threading.Event())
    banner = model_banner(ctx)
    assert "not downloaded yet" in banner and "small, rough faces" in banner  # what the shipped demo is
    fallback = cache.get(s).model  # HF_HUB_OFFLINE in the tests: falls back to the demo model
    assert fallback.is_demo and "not available" in fallback.note and "not available" in model_banner(ctx)
    assert "HF_HUB_OFFLINE" not in model_banner(ctx) and "\n" not in model_banner(ctx)  # one line; the reason is logged
    from easyphoto_app.ui.common import footer

    assert fallback.note not in footer(ctx, fallback, "1 image(s).")  # said once at the top, not under every result
    s.app.model = "demo"
    chosen = cache.get(s).model
    assert chosen.is_demo and chosen.note == "" and "not available" not in model_banner(ctx)


def test_with_nothing_changed_a_panel_shows_and_hands_over_the_defaults_of_the_model_the_job_runs_on(tmp_path):
    """Default settings, offline, SD 1.5 not downloaded: a job falls back to the built-in face model, so the panels
    show its defaults, and a Start with nothing changed hands over no flag (SD 1.5's rank 128 and learning rate 1e-4
    went over as the user's choice: 800 steps, an hour on a busy CPU, then noise)."""
    from easyphoto_app.model_defaults import panel_defaults
    from easyphoto_app.settings import DEFAULT_MODEL, TrainConfig, config_flags, load_settings

    settings = load_settings(tmp_path)
    assert settings.app.model == DEFAULT_MODEL
    train = panel_defaults(settings, "train")
    assert (train.max_train_steps, train.rank, train.lora_alpha, train.learning_rate) == (300, 16, 16.0, 5e-5)
    assert (
        panel_defaults(settings, "rl").num_inference_steps == 10 and panel_defaults(settings, "generate").width == 128
    )
    names = ["max_train_steps", "rank", "learning_rate", "train_text_encoder"]
    shown = [getattr(train, n) for n in names]
    assert config_flags(TrainConfig, names, shown, shown) == []
    assert config_flags(TrainConfig, names, [300.0, 32, 5e-5, True], shown) == ["--rank", "32", "--train-text-encoder"]


@pytest.mark.slow
def test_train_with_no_flags_on_a_fresh_folder_runs_the_face_models_own_settings(tmp_path, astro_photos):
    """The CLI as a newcomer types it: no --model, no settings file, offline. Stopped once it has said what it runs."""
    import subprocess
    import sys

    from conftest import ROOT

    data = tmp_path / "data"
    assert run_cli(data, "prepare", "--user", "astro", *map(str, astro_photos)).returncode == 0
    events = tmp_path / "train.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "easyphoto_app",
            "--data-dir",
            str(data),
            "train",
            "--user",
            "astro",
            "--events",
            str(events),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and '"progress"' not in (events.read_text() if events.exists() else ""):
        time.sleep(0.2)
    events.with_suffix(".stop").touch()
    assert proc.wait(timeout=300) == 0
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    said = next(e for e in lines if e["type"] == "log" and e["message"].startswith("Training a face LoRA"))
    assert "300 steps at 128px" in said["message"] and "rank 16, alpha 16, learning rate 5e-05" in said["message"]
    assert {k: said["settings"][k] for k in ("rank", "lora_alpha", "learning_rate")} == {
        "rank": 16,
        "lora_alpha": 16.0,
        "learning_rate": 5e-5,
    }
    assert lines[-1]["type"] == "done" and lines[-1]["stopped"]


def test_a_job_that_ends_is_reaped_and_leaves_no_defunct_child(home_copy):
    import psutil

    from easyphoto_app.jobs import JobManager
    from easyphoto_app.workspace import Workspace

    ws = Workspace(home_copy)
    job = JobManager(ws, ["--data-dir", str(home_copy)]).start("train", "nobody", ws.job_events("train", "nobody"), [])
    deadline = time.monotonic() + 120  # the refusal takes seconds; a child nobody waits for stays <defunct> for ever
    while time.monotonic() < deadline and psutil.pid_exists(job.pid):
        time.sleep(0.1)
    assert not psutil.pid_exists(job.pid), f"the ended job is a {psutil.Process(job.pid).status()} child"


def test_the_status_line_says_stopped_for_a_stop_and_minutes_for_the_time_left():
    from easyphoto_app.ui.job_view import progress_html, time_left

    assert [time_left(s) for s in (20, 330, 5400, 43200)] == [
        "under a minute left",
        "about 6 min left",
        "about 1 h 30 min left",
        "about 12 h 00 min left",
    ]
    running = progress_html(
        [{"type": "progress", "step": 0, "total": 100, "phase": "sampling 2/8", "eta_s": 5230}], "running"
    )
    assert "step 0 / 100 · sampling 2/8 · about 87 min left" in running
    stopped = progress_html(
        [
            {"type": "progress", "step": 198, "total": 800},
            {"type": "done", "stopped": True, "message": "Stopped at step 198 of 800."},
        ],
        "stopped",
    )
    assert "stopped · step 198 / 800" in stopped and "killed or crashed" not in stopped
