"""What the face LoRA trainer (lora_train) and the RL run (ddpo.loop) do alike: checkpoints, resume, and a failure
reported once.

A checkpoint is a folder `<CHECKPOINT>-<n>` that appears whole (lora_io.write_checkpoint_dir):
  adapter.safetensors    the trained adapter's tensors; metadata: the run's progress, its settings, the GradScaler
  optimizer.safetensors  the optimizer's state, the trainer's generator (`rng.data`) and torch's (`rng.torch`)
  + a trainer's own files (RL: best.safetensors)
These are the names and keys both trainers wrote before this base, so their old folders still resume (RL's had no
random state: each epoch reseeds its generators, so there is none to restore).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

from easyphoto_app.errors import OutOfMemoryError, UserError, oom_message
from easyphoto_app.jobs import Reporter
from easyphoto_app.lora_io import (
    complete_checkpoints,
    load_metadata,
    load_tensors,
    optimizer_tensors,
    peft_state,
    restore_optimizer,
    write_checkpoint_dir,
)
from easyphoto_app.settings import current_names


class Trainer:
    """A trainer sets `cfg` (its settings dataclass), `work` (its checkpoint folder), `reporter`, and in setup
    `optimizer`, `scaler` (a GradScaler) and `generator` (its torch.Generator); it says what its progress is."""

    CHECKPOINT: str  # folder prefix: checkpoint-<step>, epoch-<epoch>
    ADAPTER: str  # the peft adapter it trains
    UNIT: str  # what a checkpoint's number counts
    SECTION: str = ""  # its settings' section in settings.toml ("train", "rl"): old names read there
    KEEP_ON_RESUME: frozenset[str] = frozenset()  # settings today's flags may change when resuming
    FAILED: str  # a failure's event begins with it
    OOM_LOWER: tuple[str, str]  # what to lower when memory runs out: in the app's words, in the CLI's flags

    # ------------------------------------------------------------------ what each trainer says
    def adapted_models(self) -> dict:
        """Key prefix -> the model that carries the trained adapter."""
        raise NotImplementedError

    def checkpoint_number(self) -> int:
        raise NotImplementedError

    def progress_state(self) -> dict:
        """The run's progress, JSON-able: the adapter file's metadata."""
        raise NotImplementedError

    def restore_progress(self, meta: dict, folder: Path) -> None:
        raise NotImplementedError

    def extra_files(self) -> dict[str, tuple[dict, dict]]:
        return {}

    # ------------------------------------------------------------------ checkpoints
    def adapter_state(self) -> dict:
        state = {}
        for prefix, model in self.adapted_models().items():
            state.update(peft_state(model, self.ADAPTER, prefix))
        return state

    def load_adapter_state(self, tensors: dict) -> None:
        from peft.utils import set_peft_model_state_dict

        for prefix, model in self.adapted_models().items():
            own = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
            if own:
                set_peft_model_state_dict(model, own, adapter_name=self.ADAPTER)

    def save_checkpoint(self) -> Path:
        import torch

        opt, opt_meta = optimizer_tensors(self.optimizer)
        rng = {"rng.data": self.generator.get_state(), "rng.torch": torch.get_rng_state()}
        meta = {**self.progress_state(), "settings": vars(self.cfg), "scaler": self.scaler.state_dict()}
        return write_checkpoint_dir(
            self.work / f"{self.CHECKPOINT}-{self.checkpoint_number()}",
            {
                "adapter.safetensors": (self.adapter_state(), meta),
                "optimizer.safetensors": ({**opt, **rng}, opt_meta),
                **self.extra_files(),
            },
        )

    def load_checkpoint(self, folder: Path) -> None:
        """After setup: the adapter, optimizer, random and scaler state and the progress of a checkpoint."""
        import torch

        adapter, meta = load_tensors(folder / "adapter.safetensors")
        self.load_adapter_state(adapter)
        opt, opt_meta = load_tensors(folder / "optimizer.safetensors")
        restore_optimizer(self.optimizer, opt, opt_meta)
        if "rng.data" in opt:
            self.generator.set_state(opt["rng.data"])
            torch.set_rng_state(opt["rng.torch"])
        if meta.get("scaler"):  # an empty state: the scaler was disabled (not fp16)
            self.scaler.load_state_dict(meta["scaler"])
        self.restore_progress(meta, folder)

    def adopt_settings(self, folder: Path) -> dict:
        """Before setup: a resumed run continues with the settings it was started with, whatever the flags say now
        (but KEEP_ON_RESUME). Returns the checkpoint's metadata."""
        meta = load_metadata(folder / "adapter.safetensors")
        settings = current_names(self.SECTION, meta["settings"])  # a checkpoint from before the rename too
        for f in fields(self.cfg):
            if f.name in settings and f.name not in self.KEEP_ON_RESUME:
                setattr(self.cfg, f.name, settings[f.name])
        return meta

    # ------------------------------------------------------------------ resume
    def checkpoints(self) -> list[Path]:
        return complete_checkpoints(self.work, self.CHECKPOINT)

    def resume_point(self) -> Path | None:
        """The newest whole checkpoint, its settings adopted (before setup); None, and said, if there is none."""
        found = self.checkpoints()
        if not found:
            self.reporter.log(f"No checkpoint to resume from; starting at {self.UNIT} 0.")
            return None
        self.adopt_settings(found[-1])
        return found[-1]


def add_note(exc: BaseException, note: str) -> None:
    """BaseException.add_note, on Python 3.10 too: words a failure's event adds after the error's own."""
    exc.__notes__ = [*getattr(exc, "__notes__", []), note]


def _with_notes(message: str, exc: BaseException) -> str:
    return " ".join([message, *getattr(exc, "__notes__", [])])


@contextmanager
def failure_reported(reporter: Reporter, trainer):
    """The one place where a training job's failure becomes its last event: a refusal as itself, out of memory in
    the app's words (raised again in the CLI's), any other error with the trainer's FAILED words. `trainer`: the
    Trainer class, or a function giving it (so that a refused start need not import the trainer's modules)."""
    try:
        yield
    except UserError as exc:
        reporter.failed(_with_notes(str(exc), exc), refused=True)
        raise
    except BaseException as exc:
        import torch  # here, so that a refusal does not wait for it

        trainer = trainer if isinstance(trainer, type) else trainer()
        if isinstance(exc, torch.OutOfMemoryError):
            reporter.failed(_with_notes(oom_message(trainer.OOM_LOWER[0]), exc))
            raise OutOfMemoryError(oom_message(trainer.OOM_LOWER[1])) from None
        reporter.failed(_with_notes(f"{trainer.FAILED}: {type(exc).__name__}: {exc}", exc))
        raise
