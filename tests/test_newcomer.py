"""What a new (and careless) user meets: refusals that say why, nothing stored or dropped without a word."""

import json
import time

import pytest

import photos
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


def test_uploads_that_are_not_photos_or_already_there_are_reported_and_not_stored(tmp_path, astro_photos):
    data = tmp_path / "data"
    bad = photos.bad_files(tmp_path / "bad")
    copy = tmp_path / "again.jpg"
    copy.write_bytes(astro_photos[0].read_bytes())
    r = run_cli(data, "prepare", "--user", "a", *map(str, astro_photos), str(bad["text"]), str(bad["empty"]), str(copy), "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout[r.stdout.index("{"):])
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
    job = jobs.start("train", "astro", ws.job_events("train", "astro"), ["--steps", "2"])
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
        job = jobs.start("train", "astro", events, ["--steps", "4", "--save-every", "2", "--rank", "4", *args],
                         keep_history=keep_history)
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

    from easyphoto_app.models import PipelineCache
    from easyphoto_app.settings import load_settings
    from easyphoto_app.ui.common import model_banner

    s = load_settings(data_dir)
    s.app.model = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    cache = PipelineCache()
    ctx = SimpleNamespace(settings=s, pipelines=cache)
    banner = model_banner(ctx)
    assert "not downloaded yet" in banner and "small, rough faces" in banner  # what the shipped demo is
    _, fallback = cache.get(s)  # HF_HUB_OFFLINE in the tests: falls back to the demo model
    assert fallback.is_demo and "not available" in fallback.note and "not available" in model_banner(ctx)
    s.app.model = "demo"
    _, chosen = cache.get(s)
    assert chosen.is_demo and chosen.note == "" and "not available" not in model_banner(ctx)
