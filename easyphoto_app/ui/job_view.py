"""Start / Stop / Resume for a background job, and a live view of its events.

The view is rebuilt from the job's JSON-lines events on a timer, so a browser
refresh (or a second tab) re-attaches to a running job.
"""

from __future__ import annotations

import html
from collections.abc import Callable

import gradio as gr
import pandas as pd

from easyphoto_app.errors import UserError
from easyphoto_app.jobs import JOB_NAMES, JobFollower, check_can_start, job_key, previous_work
from easyphoto_app.model_defaults import panel_defaults
from easyphoto_app.settings import config_flags
from easyphoto_app.ui.common import Context, friendly
from easyphoto_app.workspace import validate_user_id


def time_left(seconds: float) -> str:
    """An estimate in the unit a person reads it in."""
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute left"
    if minutes < 90:
        return f"about {minutes} min left"
    return f"about {minutes // 60} h {minutes % 60:02d} min left"


STATUS_CHANNELS = ("progress", "done", "failed", "log")  # what progress_html and the job's state read


def progress_html(events: list[dict], state: str) -> str:
    prog = [e for e in events if e["type"] == "progress"]
    final = [e for e in events if e["type"] in ("done", "failed")]
    logs = [e["message"] for e in events if e["type"] == "log"][-3:]
    step, total = (prog[-1]["step"], prog[-1]["total"]) if prog else (0, 1)
    parts = [f'<progress value="{step}" max="{total}" style="width:100%"></progress>']
    line = f"step {step} / {total}" if prog else ("did not start" if final else "waiting to start")
    if prog and prog[-1].get("phase") and state == "running":
        line += f" · {prog[-1]['phase']}"
    if prog and prog[-1].get("eta_s") is not None and state == "running":
        line += f" · {time_left(prog[-1]['eta_s'])}"
    parts.append(f"<div>{html.escape(state)} · {html.escape(line)}</div>")
    if final and final[-1].get("refused"):
        parts.append(f"<div><b>Refused: {html.escape(final[-1]['message'])}</b></div>")
    elif final:
        parts.append(f"<div><b>{html.escape(final[-1].get('message') or final[-1]['type'])}</b></div>")
    elif state == "interrupted":
        parts.append(
            "<div><b>The job ended without finishing (killed or crashed). Press Resume to continue from the "
            "last checkpoint.</b></div>"
        )
    parts += [f"<div style='opacity:.7'>{html.escape(m)}</div>" for m in logs]
    return "\n".join(parts)


def series(events: list[dict], event_type: str, x: str, ys: list[str], filt: Callable[[dict], bool] = lambda e: True):
    """A long-form DataFrame (x, value, series) of the chosen fields for gr.LinePlot; None while there is no point
    (an empty frame would fix the plot's colour scale to nothing and no line would ever be drawn)."""
    rows = [
        {"x": e[x], "value": e[y], "series": y}
        for e in events
        if e["type"] == event_type and filt(e)
        for y in ys
        if e.get(y) is not None and x in e
    ]
    if not rows:
        return None
    return pd.DataFrame(rows, columns=["x", "value", "series"]).astype({"x": float, "value": float, "series": str})


class Followers:
    """Each open page's JobFollower, by its session: a page reads only what its job appended since its last tick.
    The oldest are forgotten past `keep` pages (a closed tab says nothing)."""

    def __init__(self, keep: int = 64):
        self.keep, self.by_session = keep, {}

    def of(self, job, session: str | None) -> JobFollower:
        follower = self.by_session.get(session)
        if follower is None or follower.key != job_key(job):
            follower = JobFollower(job)
            if session is not None:
                self.by_session.pop(session, None)
                self.by_session[session] = follower
                while len(self.by_session) > self.keep:
                    self.by_session.pop(next(iter(self.by_session)))
        return follower


def view_values(follower: JobFollower, views: list[tuple]) -> list:
    """Each view's value from the job's plotted history, made again only when a channel it reads got events: a
    view is (component, fn) or (component, fn, channels), and reads every channel without them. The others are
    skipped: nothing of them is sent."""
    changed = follower.refresh()
    values = []
    for _component, fn, *reads in views:
        reads = set(reads[0]) if reads else None
        if changed is None or (changed and (reads is None or changed & reads)):
            values.append(fn(follower.history.events(reads)))  # only the channels it reads: less to go through
        else:
            values.append(gr.skip())
    return values


def job_controls(
    ctx: Context,
    kind: str,
    user: gr.Textbox,
    section: str,
    fields: dict,
    start_label: str,
    layout_views: Callable[[], list[tuple]],
) -> dict:
    """Start / Resume / Stop, a status line, and the live views that `layout_views` lays out below it: it returns
    (component, events -> value[, channels read]) tuples, refreshed every second from the job's events. `fields`
    maps the settings of `section` to the panel's inputs; a job gets only the ones the user changed from what the
    panel showed."""
    names, inputs = list(fields), list(fields.values())
    cls = type(getattr(ctx.settings, section))

    def defaults() -> list:
        cfg = panel_defaults(ctx.settings, section)
        return [getattr(cfg, name) for name in names]

    shown = gr.State(defaults())
    asked = gr.State("")  # the user whose earlier run a second Start would replace, once they were told
    with gr.Row():
        start = gr.Button(start_label, variant="primary", elem_id=f"{kind}-start")
        resume = gr.Button("Resume", elem_id=f"{kind}-resume")
        stop = gr.Button("Stop (saves first)", variant="stop", elem_id=f"{kind}-stop")
    hint = gr.Markdown(elem_id=f"{kind}-hint")
    status = gr.HTML(elem_id=f"{kind}-status")
    views = layout_views()
    timer = gr.Timer(1.0)

    def hint_for(user_v):
        """What is missing before Start can work, said before anything starts."""
        if not user_v:
            return ""
        try:
            check_can_start(ctx.ws, kind, validate_user_id(user_v))
        except UserError as exc:
            return f"⚠️ {exc}"
        return ""

    followers = Followers()

    def current_view(user_v, request: gr.Request = None):
        """The job of this tab, whoever it is for (a reload or another typed id still shows it); an empty user
        box is filled with the last job's user, so Resume works after a reload. The hint follows the photos and
        the jobs. Each page reads only what the job appended since its last tick."""
        job = ctx.jobs.current()
        fill = job.user if job and not user_v else gr.skip()  # whichever tab's job: one person at a time
        if job is None or job.kind != kind:
            return (fill, hint_for(user_v), "<div>No job yet.</div>", *(view[1]([]) for view in views))
        follower = followers.of(job, getattr(request, "session_hash", None))
        values = view_values(follower, views)
        events = follower.run.events(STATUS_CHANNELS)
        head = f"<div><b>{html.escape(JOB_NAMES[kind])}</b> for <b>{html.escape(job.user)}</b>"
        if user_v and user_v != job.user:
            head += f" (not <b>{html.escape(user_v)}</b>, the id typed above)"
        head += "</div>"
        return (fill, hint_for(user_v or job.user), head + progress_html(events, ctx.jobs.state(job, events)), *values)

    @friendly
    def on_start(user_v, asked_v, shown_v, *values, resume_run=False):
        user_v = validate_user_id(user_v)
        check_can_start(ctx.ws, kind, user_v)
        ctx.jobs.refuse_if_busy(kind, user_v)  # a running job is the answer before any question about earlier runs
        earlier = None if resume_run else previous_work(ctx.ws, kind, user_v)
        if earlier and asked_v != user_v:
            gr.Warning(f"{earlier} Press {start_label} again to start a new run, or Resume.")
            return (*(gr.skip() for _ in outputs[:-1]), user_v)
        args = config_flags(cls, names, values, shown_v) + (["--resume"] if resume_run else [])
        ctx.jobs.start(kind, user_v, ctx.ws.job_events(kind, user_v), args, keep_history=resume_run)
        gr.Info(f"{JOB_NAMES[kind].capitalize()} started for {user_v}.")
        return (*current_view(user_v), "")

    def on_stop(user_v):
        running = ctx.jobs.running()
        if running is None:
            raise UserError(f"No {JOB_NAMES[kind]} job is running.")
        if running.kind != kind:
            raise UserError(
                f"No {JOB_NAMES[kind]} job is running: the running job is {JOB_NAMES[running.kind]} "
                f"for '{running.user}' (stop it in its own tab)."
            )
        ctx.jobs.stop(kind)
        gr.Info("Stopping: the job saves a checkpoint first.")

    outputs = [user, hint, status, *(view[0] for view in views), asked]
    start.click(on_start, [user, asked, shown, *inputs], outputs, api_name=f"{kind}_start", concurrency_limit=1)
    resume.click(lambda *a: on_start(*a, resume_run=True), [user, asked, shown, *inputs], outputs, concurrency_limit=1)
    stop.click(friendly(on_stop), user, None)
    timer.tick(current_view, user, outputs[:-1], show_progress="hidden", queue=False)
    user.change(hint_for, user, hint, show_progress="hidden", queue=False)

    def refresh():
        """The defaults of the model a job would run on now (when the page loads, and after the model changes)."""
        values = defaults()
        return [values, *values]

    return {"status": status, "start": start, "stop": stop, "refresh_defaults": (refresh, [shown, *inputs])}
