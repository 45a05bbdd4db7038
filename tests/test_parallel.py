"""What the processes of a data-parallel RL run exchange (ddpo/sync.py over accelerate's PartialState): two real
processes on the CPU (gloo), no model. (A whole RL run on two processes: test_rl.py::test_data_parallel_rl_with_two_
processes.)"""

import os

import torch
import torch.multiprocessing as mp
from accelerate import PartialState
from conftest import free_port

from easyphoto_app.ddpo.sync import ProcessSync


def test_one_process_passes_everything_through():
    sync = ProcessSync(PartialState(cpu=True))
    assert (sync.rank, sync.world, sync.is_main, sync.share(8)) == (0, 1, True, slice(0, 8))
    rewards, prompts, info = sync.rewards([0.5, 0.25], ["a", "b"], {"no_face_rate": 0.5})
    assert rewards.tolist() == [0.5, 0.25] and prompts == ["a", "b"] and info == {"no_face_rate": 0.5}
    assert sync.any(True) and not sync.any(False)
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 2.0)
    sync.average_grads([p])
    sync.check_replicas([p], 0)
    assert p.grad.tolist() == [2.0, 2.0, 2.0]


def _process(rank: int, port: int, queue) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        OMP_NUM_THREADS="1",
    )
    sync = ProcessSync(PartialState(cpu=True))
    rewards, prompts, info = sync.rewards([10.0 * rank, 10.0 * rank + 1], [f"p{rank}"] * 2, {"rate": float(rank)})
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([1.0, 3.0]) * (rank + 1)  # 1, 3 and 2, 6: the mean is 1.5, 4.5
    sync.average_grads([p])
    sync.check_replicas([p], 0)  # the same weights everywhere: no complaint
    drifted = torch.nn.Parameter(torch.tensor([float(rank)]))
    try:
        sync.check_replicas([drifted], 7)
        drift = None
    except RuntimeError as exc:
        drift = str(exc)
    queue.put(
        (
            rank,
            sync.share(8),
            rewards.tolist(),
            prompts,
            info,
            sync.any(rank == 1),
            p.grad.tolist(),
            drift,
            sync.is_main,
        )
    )


def test_two_processes_gather_in_order_average_gradients_and_catch_a_drift():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    for attempt in range(3):  # the free port can be taken between finding it and the processes binding it
        try:
            mp.start_processes(_process, args=(free_port(), queue), nprocs=2, start_method="spawn")
            break
        except mp.ProcessRaisedException as exc:
            if "address already in use" not in str(exc).lower() or attempt == 2:
                raise
    rows = sorted(queue.get() for _ in range(2))
    for rank, share, rewards, prompts, info, any_stop, grad, drift, main in rows:
        assert share == slice(4 * rank, 4 * rank + 4) and main == (rank == 0)
        assert rewards == [0.0, 1.0, 10.0, 11.0] and prompts == ["p0", "p0", "p1", "p1"]  # in process order
        assert info == {"rate": 0.5}  # averaged
        assert any_stop  # one process stopping stops both
        assert grad == [1.5, 4.5]
        assert drift is not None and "differs between processes after epoch 7" in drift
