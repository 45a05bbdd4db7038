"""The RL job: start or resume an RLRun, train epochs until the epoch count, the time budget or Stop, and end
with the RL LoRA written, its diagnoses said, and the face LoRA checked untouched. An error after the first epoch
still writes the best LoRA so far; the caller reports the failure (trainer.failure_reported, with RLRun's words)."""

from __future__ import annotations

import torch

from easyphoto_app.ddpo.evaluation import eval_share, fit_eval_every
from easyphoto_app.ddpo.loop import RLResult, RLRun
from easyphoto_app.ddpo.memory import preflight
from easyphoto_app.jobs import Reporter
from easyphoto_app.lora_io import set_aside_previous
from easyphoto_app.monitor import Monitor
from easyphoto_app.settings import Settings
from easyphoto_app.trainer import add_note
from easyphoto_app.workspace import Workspace, sha256_file


def run_rl(
    settings: Settings, ws: Workspace, user: str, reporter: Reporter, resume: bool = False, reward_fn=None
) -> RLResult:
    run = RLRun(settings, ws, user, reporter, reward_fn)
    face_hash = sha256_file(run.face_lora, cached=False)
    start = run.resume_point() if resume else None
    if not resume and run.sync.is_main:
        set_aside_previous(ws.ddpo_lora(user), run.checkpoints())
    fitted = fit_eval_every(run.cfg)
    if fitted:
        reporter.log(fitted)
    reporter.log(
        f"RL for '{user}': up to {run.cfg.epochs} epochs, budget {run.cfg.max_hours:g} h, "
        f"{run.cfg.samples_per_epoch} samples/epoch, {run.steps} steps at {run.resolution}px on {run.device}. "
        f"Evaluation: {run.cfg.eval_samples} fixed samples every {run.cfg.eval_every} epoch(s) and at the end, "
        f"about {eval_share(run.cfg):.0%} of the time. Base model: {run.model.label}"
    )
    reason, started = "error", False
    try:
        with Monitor(lambda row: reporter.metric(kind="memory", **row), interval=2.0):
            run.setup()
            started = True
            reporter.log(f"Precision: {run.precision.name} ({run.precision.reason}).")
            _warn_if_too_big(run, reporter)
            if start:
                run.load_checkpoint(start)
                reporter.log(f"Resumed after epoch {run.epoch - 1}.")
            reason = _train_epochs(run, reporter)
            if reason != "Stop" and not run.evaluated_now():
                run.evaluate()  # the last weights get their chance too (its time was kept out of the budget)
            reporter.progress(
                run.epoch, run.cfg.epochs, reward=round(run.best_reward, 4) if run.best_epoch >= 0 else None
            )
    except BaseException as exc:
        if started and run.epoch > 0:  # an error after the first epoch still leaves the best file
            add_note(exc, f"The best epoch so far was saved: {run.write_output('an error').path}.")
        raise
    finally:
        run.rewards.close()
    result = run.write_output(reason)
    _check_face_lora(run, face_hash, reporter)
    summary, due = run.diagnostics.closing(run.evals, run.epoch)
    for code, message in due:
        reporter.warning(code, message)
    result.message = f"{result.message} {summary}"
    reporter.done(
        result.message,
        path=str(result.path),
        best_epoch=result.best_epoch,
        epochs=result.epochs,
        stopped=reason == "Stop",
    )
    return result


def _train_epochs(run: RLRun, reporter: Reporter) -> str:
    """Epochs (with their evaluations) until the epoch count, the budget or Stop; returns which ended them."""
    while run.epoch < run.cfg.epochs:
        reporter.progress(
            run.epoch,
            run.cfg.epochs,
            reward=round(run.best_reward, 4) if run.best_epoch >= 0 else None,
            time_left_s=round(run.budget.left(), 1),
            eta_s=run.eta_s(),
        )
        if run.epoch % max(1, run.cfg.eval_every) == 0 and not run.evaluated_now():
            run.evaluate()
        if not run.run_epoch():
            return "Stop" if run.reporter.should_stop() else "the time budget"
        for code, message in run.diagnostics.epoch(run.history[-1]):
            reporter.warning(code, message)
    return "the epoch count"


def _warn_if_too_big(run: RLRun, reporter: Reporter) -> None:
    if run.device != "cuda":
        return
    free, _ = torch.cuda.mem_get_info()
    try:
        warning = preflight(
            dict(run.pipe.unet.config), dict(run.pipe.vae.config), run.cfg, run.resolution, free, run.dtype
        )
    except Exception as exc:  # an estimate must never stop a run
        warning = f"(no memory estimate: {type(exc).__name__}: {exc})"
    if warning:
        reporter.log(warning)


def _check_face_lora(run: RLRun, expected: str, reporter: Reporter) -> None:
    if sha256_file(run.face_lora, cached=False) != expected:  # never expected; a loud message if it ever happens
        reporter.log(f"warning: {run.face_lora.name} changed during RL; retrain it to be safe.")
