"""RAM and VRAM readings for the live plots. Fast; VRAM through a stand-in for torch.cuda (no GPU here)."""

import sys
import threading
import time
from types import SimpleNamespace

import psutil

from easyphoto_app import monitor


def fake_torch(initialized=True):
    cuda = SimpleNamespace(is_available=lambda: True, is_initialized=lambda: initialized,
                           memory_allocated=lambda: 3 * 2**20 + 2**19, memory_reserved=lambda: 8 * 2**20,
                           max_memory_allocated=lambda: 5 * 2**20)
    return SimpleNamespace(cuda=cuda)


def test_a_reading_has_this_processs_rss_and_the_machines_ram_in_mb(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were never imported
    row = monitor.sample()
    rss = psutil.Process().memory_info().rss / 2**20
    total = psutil.virtual_memory().total / 2**20
    assert abs(row["rss_mb"] - rss) < 64 and row["ram_total_mb"] == round(total, 1)
    assert 0 < row["ram_used_mb"] < row["ram_total_mb"]
    assert (row["vram_alloc_mb"], row["vram_reserved_mb"], row["vram_peak_mb"]) == (None, None, None)
    assert monitor.format_vram(row) == "VRAM: n/a (CPU)"


def test_vram_is_read_only_once_cuda_is_in_use(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", fake_torch(initialized=False))
    assert monitor.sample()["vram_alloc_mb"] is None
    monkeypatch.setitem(sys.modules, "torch", fake_torch())
    row = monitor.sample()
    assert (row["vram_alloc_mb"], row["vram_reserved_mb"], row["vram_peak_mb"]) == (3.5, 8.0, 5.0)
    assert monitor.format_vram(row) == "VRAM: 4 MB allocated, 8 MB reserved, peak 5 MB"


def test_the_monitor_reads_at_once_then_every_interval_and_stops_with_its_block(monkeypatch):
    readings = iter([100.0, 300.0, 200.0] + [50.0] * 1000)
    monkeypatch.setattr(monitor, "sample", lambda: {"rss_mb": next(readings)})
    rows = []
    with monitor.Monitor(rows.append, interval=0.05) as m:
        assert rows == [{"rss_mb": 100.0}]  # the first reading is there before the job starts
        deadline = time.monotonic() + 10
        while len(rows) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    count = len(rows)
    assert [r["rss_mb"] for r in rows[:3]] == [100.0, 300.0, 200.0] and m.peak_rss_mb == 300.0
    time.sleep(0.2)
    assert len(rows) == count and not any(t.name == "easyphoto-monitor" for t in threading.enumerate())
    assert m._thread.daemon  # a stuck reading never keeps the app from exiting
