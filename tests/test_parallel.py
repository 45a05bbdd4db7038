"""What a process of a data-parallel run reads from its launcher's environment. Fast; no second GPU here.
(Two real processes training together: test_rl.py::test_data_parallel_rl_with_two_processes.)"""

import pytest
import torch

from easyphoto_app import parallel


def test_without_a_launcher_a_process_is_the_only_one_and_the_main_one(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert (parallel.rank(), parallel.world(), parallel.is_main()) == (0, 1, True)


@pytest.mark.parametrize("rank, main", [("0", True), ("1", False), ("3", False)])
def test_rank_and_world_come_from_the_launcher(monkeypatch, rank, main):
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (parallel.rank(), parallel.world(), parallel.is_main()) == (int(rank), 4, main)


def test_each_process_binds_its_local_gpu_and_a_single_one_touches_nothing(monkeypatch):
    bound = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    monkeypatch.setenv("WORLD_SIZE", "1")
    parallel.bind_local_gpu()
    assert bound == []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    parallel.bind_local_gpu()
    monkeypatch.delenv("LOCAL_RANK")
    parallel.bind_local_gpu()
    assert bound == [1, 0]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parallel.bind_local_gpu()  # a CPU run of the same launch: nothing to bind
    assert bound == [1, 0]
