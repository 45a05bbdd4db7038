"""The trainer base (easyphoto_app.trainer) on a toy trainer small enough to run in a blink: a checkpoint brings back
the adapter, the optimizer, both random generators, the GradScaler and the progress; settings are adopted; a
failure is one event in the trainer's words."""

from collections import OrderedDict
from dataclasses import dataclass

import pytest
import torch

from easyphoto_app.errors import OutOfMemoryError, UserError
from easyphoto_app.jobs import Reporter
from easyphoto_app.lora_adapters import add_lora
from easyphoto_app.lora_io import load_tensors, save_tensors
from easyphoto_app.trainer import Trainer, add_note, failure_reported


@dataclass
class ToyConfig:
    lr: float = 0.05
    rank: int = 2
    budget: float = 1.0


class Toy(Trainer):
    CHECKPOINT, ADAPTER, UNIT = "step", "toy", "step"
    KEEP_ON_RESUME = frozenset({"budget"})
    FAILED = "Toy training failed"
    OOM_LOWER = ("the toy's size", "--size")

    def __init__(self, work, init_seed=0, reporter=None, **cfg):
        self.cfg, self.work, self.reporter = ToyConfig(**cfg), work, reporter or Reporter()
        torch.manual_seed(0)  # the base model, the same each time (a checkpoint does not hold it)
        self.model = torch.nn.Sequential(OrderedDict(proj=torch.nn.Linear(4, 4), out=torch.nn.Linear(4, 1)))
        self.model.requires_grad_(False)
        torch.manual_seed(init_seed)  # the adapter's initial weights and torch's random state from here on
        self.params = add_lora(self.model, self.cfg.rank, self.cfg.rank, ["proj"], adapter=self.ADAPTER)
        self.optimizer = torch.optim.AdamW(self.params, lr=self.cfg.lr)
        self.scaler = torch.amp.GradScaler("cpu")
        self.generator = torch.Generator().manual_seed(init_seed + 1)
        self.step, self.losses = 0, []

    def adapted_models(self) -> dict:
        return {"toy": self.model}

    def checkpoint_number(self) -> int:
        return self.step

    def progress_state(self) -> dict:
        return {"step": self.step, "losses": self.losses}

    def restore_progress(self, meta, folder) -> None:
        self.step, self.losses = meta["step"], meta["losses"]

    def extra_files(self) -> dict:
        return {"note.safetensors": ({"x": torch.ones(1)}, {"step": self.step})}

    def train_step(self) -> float:
        """Data from the trainer's generator, noise from torch's own: a resumed step needs both back."""
        x = torch.randn(8, 4, generator=self.generator) + 0.1 * torch.randn(8, 4)
        loss = (self.model(x) - 1).pow(2).mean()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.losses.append(loss.item())
        return loss.item()


def test_attach_gives_float32_trainable_lora_parameters_of_a_half_model_and_nothing_else():
    model = torch.nn.Sequential(OrderedDict(proj=torch.nn.Linear(4, 4))).to(torch.float16)
    model.requires_grad_(False)
    params = add_lora(model, 2, 2, ["proj"], adapter="a")
    named = dict(model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable == {"proj.lora_A.a.weight", "proj.lora_B.a.weight"}
    assert {id(p) for p in params} == {id(named[n]) for n in trainable}
    assert all(named[n].dtype == torch.float32 for n in trainable)
    assert named["proj.base_layer.weight"].dtype == torch.float16  # the frozen weights keep their dtype


def test_a_resumed_trainer_continues_step_for_step_from_its_checkpoint(tmp_path):
    first = Toy(tmp_path)
    for _ in range(3):
        first.train_step()
    first.scaler.update(64.0)  # a scale an fp16 overflow would have left: the checkpoint must keep it
    folder = first.save_checkpoint()
    assert folder == tmp_path / "step-3"
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter.safetensors",
        "note.safetensors",
        "optimizer.safetensors",
    ]
    adapter, meta = load_tensors(folder / "adapter.safetensors")
    assert set(adapter) == {"toy.proj.lora_A.weight", "toy.proj.lora_B.weight"}
    assert meta["settings"] == {"lr": 0.05, "rank": 2, "budget": 1.0} and meta["step"] == 3
    expected = [first.train_step() for _ in range(2)]

    second = Toy(tmp_path, init_seed=7)  # other initial weights and random state: all must come from the folder
    second.load_checkpoint(folder)
    assert (second.step, second.losses, second.scaler.get_scale()) == (3, first.losses[:3], 64.0)
    assert [second.train_step() for _ in range(2)] == expected
    after = first.adapter_state()
    assert all(torch.equal(after[k], v) for k, v in second.adapter_state().items())


def test_a_checkpoint_without_random_state_as_rl_wrote_them_still_resumes(tmp_path):
    first = Toy(tmp_path)
    first.train_step()
    folder = first.save_checkpoint()
    opt, opt_meta = load_tensors(folder / "optimizer.safetensors")
    save_tensors(folder / "optimizer.safetensors", {k: v for k, v in opt.items() if not k.startswith("rng.")}, opt_meta)
    second = Toy(tmp_path, init_seed=7)
    state = second.generator.get_state()
    second.load_checkpoint(folder)
    assert second.step == 1 and torch.equal(second.generator.get_state(), state)
    assert second.optimizer.state_dict()["state"][0]["exp_avg"].equal(
        first.optimizer.state_dict()["state"][0]["exp_avg"]
    )


def test_a_resume_adopts_the_newest_checkpoints_settings_but_those_kept_on_resume(tmp_path):
    for step, lr in ((9, 0.01), (10, 0.02)):  # 10 after 9: by number, not by name
        old = Toy(tmp_path, lr=lr, rank=3, budget=5.0)
        old.step = step
        old.save_checkpoint()
    events = []
    now = Toy(tmp_path, reporter=Reporter(None, [events.append]), lr=0.5, rank=2, budget=2.0)
    assert now.resume_point() == tmp_path / "step-10"
    assert (now.cfg.lr, now.cfg.rank, now.cfg.budget) == (0.02, 3, 2.0)
    assert events == []


def test_a_resume_with_no_checkpoint_says_so_and_starts_at_0(tmp_path):
    events = []
    toy = Toy(tmp_path, reporter=Reporter(None, [events.append]), lr=0.5)
    assert toy.resume_point() is None and toy.cfg.lr == 0.5
    assert [e["message"] for e in events] == ["No checkpoint to resume from; starting at step 0."]


def _noted(exc: BaseException) -> BaseException:
    add_note(exc, "The best epoch so far was saved: x.safetensors.")
    return exc


@pytest.mark.parametrize(
    "error, raised, says, event, refused",
    [
        (UserError("Add photos."), "Add photos.", None, "Add photos.", True),
        (
            torch.OutOfMemoryError("CUDA out of memory"),
            "Out of memory. Lower --size, or close other programs using the GPU, then try again.",
            OutOfMemoryError,
            "Out of memory. Lower the toy's size, or close other programs using the GPU, then try again.",
            None,
        ),
        (RuntimeError("boom"), "boom", None, "Toy training failed: RuntimeError: boom", None),
        (
            _noted(RuntimeError("boom")),
            "boom",
            None,
            "Toy training failed: RuntimeError: boom The best epoch so far was saved: x.safetensors.",
            None,
        ),
    ],
)
def test_a_failure_is_one_event_in_the_trainers_words(error, raised, says, event, refused):
    events = []
    with pytest.raises(says or type(error)) as caught:
        with failure_reported(Reporter(None, [events.append]), Toy):
            raise error
    assert str(caught.value) == raised
    assert [(e["type"], e["message"], e.get("refused")) for e in events] == [("failed", event, refused)]


def test_a_job_that_ends_well_reports_no_failure():
    events = []
    with failure_reported(Reporter(None, [events.append]), Toy):
        pass
    assert events == []
