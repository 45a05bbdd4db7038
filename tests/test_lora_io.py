"""LoRA and checkpoint files on tiny tensors: WebUI keys, the true alpha, owner, hash, round trips. Fast, no model."""

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from easyphoto_app.errors import UserError
from easyphoto_app.lora_io import (
    complete_checkpoints,
    load_tensors,
    optimizer_tensors,
    peft_state,
    read_metadata,
    restore_optimizer,
    save_lora,
    save_tensors,
    to_kohya,
    write_checkpoint_dir,
)

UNET_Q = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
TE_Q = "text_encoder.encoder.layers.1.self_attn.q_proj"  # transformers 5 leaves out `text_model.`


def tiny_state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        f"{UNET_Q}.lora_A.weight": torch.randn(4, 8, generator=g),
        f"{UNET_Q}.lora_B.weight": torch.randn(8, 4, generator=g),
        f"{TE_Q}.lora_A.weight": torch.randn(4, 8, generator=g),
        f"{TE_Q}.lora_B.weight": torch.randn(8, 4, generator=g),
    }


def test_kohya_keys_are_the_sd15_checkpoint_names_with_the_true_alpha():
    state = tiny_state()
    out = to_kohya(state, 3.5)
    unet, te = (
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_te_text_model_encoder_layers_1_self_attn_q_proj",
    )
    assert set(out) == {f"{m}.{p}" for m in (unet, te) for p in ("lora_down.weight", "lora_up.weight", "alpha")}
    assert torch.equal(out[f"{unet}.lora_down.weight"], state[f"{UNET_Q}.lora_A.weight"])
    assert torch.equal(out[f"{te}.lora_up.weight"], state[f"{TE_Q}.lora_B.weight"])
    for m in (unet, te):
        assert out[f"{m}.alpha"].dtype == torch.float32 and out[f"{m}.alpha"].item() == 3.5


def test_peft_state_is_the_adapters_tensors_in_fp32_on_the_cpu_with_the_prefix():
    from peft import LoraConfig, inject_adapter_in_model

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8)).to(torch.bfloat16)
    model = inject_adapter_in_model(LoraConfig(r=2, target_modules=["0"]), model, adapter_name="face")
    state = peft_state(model, "face", "unet")
    assert set(state) == {"unet.0.lora_A.weight", "unet.0.lora_B.weight"}
    for value in state.values():
        assert value.dtype == torch.float32 and value.device.type == "cpu" and not value.requires_grad
        assert value.is_contiguous()
    assert torch.equal(state["unet.0.lora_A.weight"], model[0].lora_A["face"].weight.float())


def test_a_saved_lora_has_webui_keys_metadata_and_a1111s_hash_of_its_tensors(tmp_path):
    from easyphoto_app.checkpoints import lora_hash, safetensors_data_offset

    path = save_lora(
        tmp_path / "loras" / "ann.safetensors",
        tiny_state(),
        2.0,
        {"easyphoto_user": "ann", "rank": 4, "steps": [1, 2]},
        owner="ann",
    )
    meta = read_metadata(path)
    assert meta["easyphoto_user"] == "ann" and json.loads(meta["rank"]) == 4 and json.loads(meta["steps"]) == [1, 2]
    data = path.read_bytes()
    assert meta["sshs_model_hash"] == hashlib.sha256(data[safetensors_data_offset(path) :]).hexdigest()
    assert lora_hash(path) == meta["sshs_model_hash"][:12]
    tensors = load_file(str(path))
    assert all(k.startswith(("lora_unet_", "lora_te_text_model_")) for k in tensors)
    assert [p.name for p in path.parent.iterdir()] == ["ann.safetensors"]


def test_a_lora_is_replaced_by_its_owner_and_never_by_another_user(tmp_path):
    path = tmp_path / "ann.safetensors"
    save_lora(path, tiny_state(), 1.0, {"easyphoto_user": "ann"}, owner="ann")
    first = path.read_bytes()
    with pytest.raises(UserError, match="ann.safetensors belongs to user 'ann'; refusing to overwrite it with 'bo's"):
        save_lora(path, tiny_state(), 9.0, {"easyphoto_user": "bo"}, owner="bo")
    assert path.read_bytes() == first
    save_lora(path, tiny_state(), 5.0, {"easyphoto_user": "ann"}, owner="ann")
    assert load_file(str(path))["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"] == 5.0
    save_lora(tmp_path / "plain.safetensors", tiny_state(), 1.0, {})  # no owner asked: no check
    save_lora(tmp_path / "plain.safetensors", tiny_state(), 1.0, {}, owner="bo")  # a file without an owner is anyone's


def test_tensors_and_their_json_metadata_round_trip(tmp_path):
    t = {"a": torch.arange(6.0).reshape(2, 3).t(), "b": torch.tensor(7)}  # a non-contiguous view is saved too
    save_tensors(tmp_path / "s.safetensors", t, {"step": 12, "note": "x", "lr": [1e-4]})
    back, meta = load_tensors(tmp_path / "s.safetensors")
    assert set(back) == {"a", "b"} and torch.equal(back["a"], t["a"]) and back["b"].item() == 7
    assert meta == {"step": 12, "note": "x", "lr": [1e-4]}
    save_tensors(tmp_path / "n.safetensors", t)
    assert load_tensors(tmp_path / "n.safetensors")[1] == {}


def test_an_adamw_state_survives_safetensors_and_continues_identically(tmp_path):
    def make():
        torch.manual_seed(0)
        p = [torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2, 2))]
        opt = torch.optim.AdamW([{"params": p[:1], "lr": 1e-2}, {"params": p[1:], "lr": 5e-3}])
        return p, opt

    def step(p, opt):
        opt.zero_grad()
        sum((x**2).sum() for x in p).backward()
        opt.step()

    p1, opt1 = make()
    step(p1, opt1)
    tensors, meta = optimizer_tensors(opt1)
    save_tensors(tmp_path / "opt.safetensors", tensors, meta)
    p2, opt2 = make()
    with torch.no_grad():
        for a, b in zip(p2, p1):
            a.copy_(b)
    restore_optimizer(opt2, *load_tensors(tmp_path / "opt.safetensors"))
    assert [g["lr"] for g in opt2.param_groups] == [1e-2, 5e-3]
    step(p1, opt1)
    step(p2, opt2)
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))


def test_a_checkpoint_folder_appears_whole_and_replaces_the_old_one(tmp_path):
    target = tmp_path / "checkpoint-3"
    write_checkpoint_dir(target, {"old.safetensors": ({"x": torch.zeros(1)}, {})})
    write_checkpoint_dir(
        target,
        {"lora.safetensors": ({"x": torch.ones(2)}, {"step": 3}), "optimizer.safetensors": ({"y": torch.ones(1)}, {})},
    )
    assert sorted(p.name for p in target.iterdir()) == ["lora.safetensors", "optimizer.safetensors"]
    assert load_tensors(target / "lora.safetensors")[1] == {"step": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-3"]  # no staging folder left
    assert [p.name for p in complete_checkpoints(tmp_path, "checkpoint")] == ["checkpoint-3"]
    (tmp_path / "checkpoint-4").write_text("a file, not a checkpoint")
    assert [p.name for p in complete_checkpoints(tmp_path, "checkpoint")] == ["checkpoint-3"]
    first = write_checkpoint_dir(
        tmp_path / "new" / "run" / "checkpoint-1", {"a.safetensors": ({"x": torch.ones(1)}, {})}
    )
    assert [p.name for p in first.iterdir()] == ["a.safetensors"]  # the first checkpoint of a run: folders made


def test_optimizer_state_that_is_not_a_tensor_is_saved_as_one():
    """Older optimizers and schedulers keep counters as Python numbers; safetensors only holds tensors."""
    from types import SimpleNamespace

    exp_avg = torch.ones(2)
    opt = SimpleNamespace(
        state_dict=lambda: {"state": {0: {"step": 3, "exp_avg": exp_avg}}, "param_groups": [{"lr": 1}]}
    )
    tensors, meta = optimizer_tensors(opt)
    assert set(tensors) == {"opt.0.step", "opt.0.exp_avg"} and tensors["opt.0.exp_avg"] is exp_avg
    assert isinstance(tensors["opt.0.step"], torch.Tensor) and tensors["opt.0.step"].item() == 3
    assert meta == {"param_groups": [{"lr": 1}]}


def test_a_checkpoint_goes_into_a_new_folder_past_what_a_killed_run_left(tmp_path):
    import os

    target = tmp_path / "ddpo_weights" / "epoch-2"  # its parent not made yet
    leftover = target.with_name(f".epoch-2.tmp-{os.getpid()}")
    leftover.mkdir(parents=True)
    (leftover / "half.safetensors").write_bytes(b"cut")
    write_checkpoint_dir(target, {"lora.safetensors": ({"x": torch.ones(1)}, {})})
    assert [p.name for p in target.iterdir()] == ["lora.safetensors"]
    assert [p.name for p in target.parent.iterdir()] == ["epoch-2"]


def test_checkpoints_with_a_hyphenated_prefix_sort_by_their_number(tmp_path):
    for n in (10, 2, 33):
        (tmp_path / f"rl-epoch-{n}").mkdir()
    assert [p.name for p in complete_checkpoints(tmp_path, "rl-epoch")] == ["rl-epoch-2", "rl-epoch-10", "rl-epoch-33"]
