"""What the processes of a data-parallel RL run (`accelerate launch`, torchrun) exchange.

Every process samples its share of the epoch; the rewards are gathered for the advantages and the LoRA gradients
averaged, so the weights stay the same everywhere. The averaging is done here by hand rather than by letting
accelerate `prepare` the UNet (as kvablack/ddpo-pytorch does): DistributedDataParallel would wrap the whole
pipeline's UNet, which sampling also calls, all-reduce on every backward although a PPO step backs up several
timestep chunks before its one optimizer step, and need `find_unused_parameters` for a base that is frozen.
Here only the RL LoRA's gradients travel, once per step, in one flat tensor. With one process every method is
a no-op or returns its input.
"""

from __future__ import annotations

import torch
from accelerate import PartialState
from accelerate.utils import gather, gather_object, reduce


class ProcessSync:
    def __init__(self, state: PartialState):
        self.state = state
        self.rank, self.world, self.is_main = state.process_index, state.num_processes, state.is_main_process

    def share(self, count: int) -> slice:
        """This process's slice of `count` items split evenly (count a multiple of the world size)."""
        size = count // self.world
        return slice(self.rank * size, (self.rank + 1) * size)

    def rewards(self, rewards: list[float], prompts: list[str], info: dict) -> tuple[torch.Tensor, list[str], dict]:
        """Every process's rewards, prompts and (averaged) info, in process order."""
        reward_t = gather(torch.tensor(rewards, dtype=torch.float32, device=self.state.device)).cpu()
        if self.world == 1:
            return reward_t, prompts, info
        keys = sorted(info)
        means = reduce(torch.tensor([float(info[k]) for k in keys], device=self.state.device), "mean").tolist()
        return reward_t, gather_object(prompts), dict(zip(keys, means))

    def objects(self, items: list) -> list:
        return items if self.world == 1 else gather_object(items)

    def any(self, flag: bool) -> bool:
        """True on every process if it is true on one (a stop that one process alone took would hang the rest)."""
        if self.world == 1:
            return flag
        return bool(reduce(torch.tensor([float(flag)], device=self.state.device), "sum").item() > 0)

    def average_grads(self, params) -> None:
        if self.world == 1:
            return
        flat = reduce(torch.cat([p.grad.flatten() for p in params]), "mean")
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad.copy_(g.view_as(p))

    def check_replicas(self, params, epoch: int) -> None:
        """The same data and averaged gradients keep every process's LoRA identical; a drift would be a bug."""
        if self.world == 1:
            return
        local = torch.stack([sum(p.double().sum() for p in params), sum(p.double().abs().sum() for p in params)])
        every = gather(local.to(self.state.device).unsqueeze(0)).cpu()
        if not torch.equal(every, every[:1].expand_as(every)):
            raise RuntimeError(f"The RL LoRA differs between processes after epoch {epoch}: {every.tolist()}")
