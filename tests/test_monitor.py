"""RAM and VRAM readings for the live plots. Fast; VRAM through a stand-in for torch.cuda (no GPU here)."""

import sys
import threading
import time
from types import SimpleNamespace

import psutil

from easyphoto_app import monitor


def fake_torch(initialized=True):
    cuda = SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: initialized,
        memory_allocated=lambda: int(3.5678 * 2**20),
        memory_reserved=lambda: int(8.0123 * 2**20),
        max_memory_allocated=lambda: int(5.2468 * 2**20),
    )
    return SimpleNamespace(cuda=cuda)


def test_a_reading_has_this_processs_rss_and_the_machines_ram_in_mb(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were never imported
    row = monitor.sample()
    rss = psutil.Process().memory_info().rss / 2**20
    total = psutil.virtual_memory().total / 2**20
    vm = psutil.virtual_memory()
    assert abs(row["rss_mb"] - rss) < 64 and row["ram_total_mb"] == round(total, 1)
    assert abs(row["ram_used_mb"] - (vm.total - vm.available) / 2**20) < 256
    for key in ("rss_mb", "ram_used_mb", "ram_total_mb"):  # MB to one decimal: short event lines
        assert isinstance(row[key], float) and row[key] == round(row[key], 1)
    assert (row["vram_alloc_mb"], row["vram_reserved_mb"], row["vram_peak_mb"]) == (None, None, None)
    assert monitor.format_vram(row) == "VRAM: n/a (CPU)"


def test_vram_is_read_only_once_cuda_is_in_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized=False))
    assert monitor.sample()["vram_alloc_mb"] is None
    monkeypatch.setitem(sys.modules, "torch", fake_torch())
    row = monitor.sample()
    assert (row["vram_alloc_mb"], row["vram_reserved_mb"], row["vram_peak_mb"]) == (3.6, 8.0, 5.2)
    assert all(isinstance(row[k], float) for k in ("vram_alloc_mb", "vram_reserved_mb", "vram_peak_mb"))
    assert monitor.format_vram(row) == "VRAM: 4 MB allocated, 8 MB reserved, peak 5 MB"


def test_the_monitor_reads_at_once_then_every_interval_and_stops_with_its_block(monkeypatch):
    readings = iter([0.25, 0.75, 0.5] + [0.125] * 1000)
    monkeypatch.setattr(monitor, "sample", lambda: {"rss_mb": next(readings)})
    rows = []
    with monitor.Monitor(rows.append, interval=0.05) as m:
        assert rows == [{"rss_mb": 0.25}]  # the first reading is there before the job starts
        assert any(t.name == "easyphoto-monitor" and t.is_alive() for t in threading.enumerate())
        deadline = time.monotonic() + 10
        while len(rows) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(rows)
    assert [r["rss_mb"] for r in rows[:3]] == [0.25, 0.75, 0.5] and m.peak_rss_mb == 0.75
    time.sleep(0.2)
    assert len(rows) == count and not any(t.name == "easyphoto-monitor" for t in threading.enumerate())
    assert m._thread.daemon  # a stuck reading never keeps the app from exiting


def test_a_reading_that_hangs_does_not_keep_the_job_from_ending(monkeypatch):
    release = threading.Event()
    calls = []

    returned = threading.Event()

    def stuck():
        calls.append(1)
        if len(calls) > 1:
            release.wait(60)  # a psutil call stuck on a busy machine
            returned.set()
        return {"rss_mb": 1.0}

    monkeypatch.setattr(monitor, "sample", stuck)
    try:
        with monitor.Monitor(lambda row: None, interval=0.01):
            while len(calls) < 2:
                time.sleep(0.01)
        assert not returned.is_set(), "the job waited for the stuck reading to end"
    finally:
        release.set()
