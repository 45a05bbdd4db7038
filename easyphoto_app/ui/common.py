"""What every tab shares: the app context and the error-to-message wrapper."""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from easyphoto_app.demo_model import DEMO, demo_label
from easyphoto_app.errors import BusyError, UserError
from easyphoto_app.faces import backend_status
from easyphoto_app.hub import cached_hub_model
from easyphoto_app.jobs import JobManager
from easyphoto_app.pipeline_cache import PipelineCache
from easyphoto_app.settings import Settings, help_of
from easyphoto_app.workspace import Workspace, validate_user_id

log = logging.getLogger(__name__)


@dataclass
class Context:
    settings: Settings
    ws: Workspace
    jobs: JobManager
    pipelines: PipelineCache = field(default_factory=PipelineCache)
    generate_lock: threading.Lock = field(default_factory=threading.Lock)
    cancel_generate: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def create(cls, settings: Settings) -> Context:
        ws = Workspace(settings.data_dir)
        return cls(settings, ws, JobManager(ws, job_global_args(settings)))

    def refresh_job_args(self) -> None:
        self.jobs.global_args = job_global_args(self.settings)

    @property
    def log_path(self) -> Path:
        return self.ws.logs_dir / "easyphoto.log"


def job_global_args(settings: Settings) -> list[str]:
    """The CLI's global options that a job started from the UI runs with."""
    app = settings.app
    return [
        "--data-dir",
        str(settings.data_dir),
        "--model",
        app.model,
        "--device",
        app.device,
        "--precision",
        app.precision,
    ]


def friendly(fn):
    """A refusal becomes one warning toast and leaves every output as it was (gr.Error would mark each output
    "Error"); anything unexpected is an error message naming the log. Never a stack trace."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except UserError as exc:
            log.info("refused in the UI (%s): %s", fn.__name__, exc)
            gr.Warning(str(exc))
            return gr.skip()
        except Exception as exc:  # noqa: BLE001
            log.exception("UI action %s failed", fn.__name__)
            raise gr.Error(
                f"Something went wrong ({type(exc).__name__}: {exc}). Details are in the log file.",
                print_exception=False,
            ) from None

    return wrapper


def with_pipeline(ctx: Context, progress, work):
    """Run work(loaded) alone on the cached LoadedModel (Generate, Compare, Portrait); Cancel stops it
    between steps."""
    if not ctx.generate_lock.acquire(blocking=False):
        raise BusyError("Another generation is running; wait for it to finish or press Cancel.")
    ctx.cancel_generate.clear()
    try:
        progress(0, desc="Loading the model (first time only)")
        loaded = ctx.pipelines.get(ctx.settings)
        return work(loaded), loaded.model
    finally:
        ctx.generate_lock.release()


def footer(ctx: Context, model, text: str) -> str:
    """A result's last lines: whether it was cancelled, and the demo model's label when that made it."""
    if ctx.cancel_generate.is_set():
        text += " Cancelled."
    return text + (
        "\n\n_Made with the built-in demo model (the note at the top of the page says why)._" if model.is_demo else ""
    )


def user_id_hint(value: str) -> str:
    """Live validation text for the user id box."""
    if not value:
        return "Type a name for this person: ASCII letters (a-z, A-Z), digits, `_` or `-`."
    try:
        validate_user_id(value)
    except UserError as exc:
        return f"⚠️ {exc}"
    return f"✔ `{value}` is a valid user id."


def user_choices(ctx: Context) -> list[str]:
    return ctx.ws.list_users()


def user_update(ctx: Context, person: str, current, first: list[str] = ()):
    """A user picker's fresh choices, set to the id typed in the Photos tab when that user exists (else kept)."""
    choices = [*first, *user_choices(ctx)]
    if person in choices[len(first) :]:
        return gr.update(choices=choices, value=person)
    return gr.update(choices=choices, value=current if current in choices else (first[0] if first else None))


def model_banner(ctx: Context) -> str:
    """The base model in one line, without loading it (start-up stays fast); and a second line when no face
    recognizer can run here, since then nobody is caught as someone else and RL cannot score likeness."""
    faces = backend_status(ctx.settings)
    line = _base_model_line(ctx)
    return line if faces["ok"] else f"{line}\n\n⚠️ **Face recognizer missing:** {faces['fix']}"


def _base_model_line(ctx: Context) -> str:
    spec = ctx.settings.app.model
    loaded = ctx.pipelines.model
    if loaded is not None and loaded.is_demo:
        return f"⚠️ **{loaded.note or loaded.label}**"
    if spec == DEMO:
        return f"⚠️ **{demo_label()}** Choose a real model in Settings for real portraits."
    if loaded is not None:
        return f"Base model: **{loaded.label}**, {loaded.family.LABEL}"

    if Path(spec).expanduser().exists() or cached_hub_model(spec):
        return f"Base model: **{spec}** (loads on first use)."
    return (
        f"Base model: **{spec}**, not downloaded yet: it downloads once (2-4 GB) on first use. Offline, the built-in "
        "demo model is used instead, a tiny model that paints small, rough faces: connect, or choose a local model in "
        "Settings."
    )


def identity_slider(gen, elem_id: str) -> gr.Slider:
    """Identity strength (the IP-Adapter's scale) beside the LoRA weights; -1 = automatic, as the settings say."""
    return gr.Slider(
        -1,
        1.5,
        value=gen.ip_scale,
        step=0.05,
        label="Identity strength",
        info=help_of(gen, "ip_scale"),
        elem_id=elem_id,
    )
