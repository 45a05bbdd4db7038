"""The RL panel's cost per tick in hour 12 of a run and in minute 1. Prints JSON.

usage: python benchmarks/long_run.py [--ticks 40]
A synthetic events file of a 12-hour RL run (720 epochs, a memory row every 2 s: tests/long_run_events.py), of a
1-hour run (the plotted series are at their bound by then) and of a 1-minute run. An open page is followed through
`--ticks` ticks of the panel's timer, each after the job appended what it writes in a second (a memory row every
other tick, a batch's progress): the time of the tick (read what is new,
the RL tab's views where something changed, the status line, each value serialised as gradio sends it) and the bytes
it sends. "before": the same ticks as the panel did them until now (the whole file parsed, every view rebuilt and
sent). Targets: the 12-hour tick within 2x the 1-minute one, and at most 200 KB a tick.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from long_run_events import rl_events, write_events  # noqa: E402  (the path above first)

TARGET_RATIO, TARGET_BYTES = 2.0, 200_000


def panel():
    """The RL tab's views as (component, events -> value), as rl_tab lays them out (the samples gallery aside: it
    shows files, not events)."""
    import gradio as gr

    from easyphoto_app.ui import rl_tab

    plot = dict(x="x", y="value", color="series")
    components = (gr.LinePlot(**plot), gr.LinePlot(**plot), gr.Markdown(), gr.Markdown())
    return [(c, fn, reads) for c, (fn, reads) in zip(components, rl_tab.EVENT_VIEWS)]


def sent_bytes(component, value) -> int:
    """What gradio sends for `value`: its postprocessed JSON; nothing for a skipped one."""
    if isinstance(value, dict) and value.get("__type__") == "update":
        return 0
    data = component.postprocess(value)
    return len(data.model_dump_json() if hasattr(data, "model_dump_json") else json.dumps(data))


def tick_now(follower, views) -> int:
    from easyphoto_app.ui.job_view import STATUS_CHANNELS, progress_html, view_values

    values = view_values(follower, views)
    status = progress_html(follower.run.events(STATUS_CHANNELS), "running")
    return len(json.dumps(status)) + sum(sent_bytes(view[0], v) for view, v in zip(views, values))


def tick_before(path: Path, views) -> int:
    from easyphoto_app.jobs import read_events
    from easyphoto_app.ui.job_view import progress_html

    events = read_events(path)[0]
    status = progress_html(events, "running")
    return len(json.dumps(status)) + sum(sent_bytes(c, fn(events)) for c, fn, _ in views)


def second_of_events(written: list[dict], i: int) -> list[dict]:
    """What the job appends in the i-th second after `written`: a sample batch's progress, a memory row every 2 s."""
    last = written[-1]["t"] + i + 1
    memory = next(e for e in reversed(written) if e.get("kind") == "memory")
    step = max((e for e in written if e["type"] == "progress"), key=lambda e: e["t"])
    return [{**step, "t": last, "phase": f"sampling {i % 8 + 1}/8"}] + ([{**memory, "t": last}] if i % 2 else [])


def follow(name: str, seconds: float, epochs: int, ticks: int, work: Path) -> dict:
    from easyphoto_app.jobs import JobFollower, JobRecord

    written = rl_events(seconds, epochs)
    path = write_events(work / f"{name}.jsonl", written)
    job = JobRecord(pid=0, kind="rl", user="ann", events=str(path), offset=0, started=0.0)
    views, follower = panel(), JobFollower(job)
    t0 = time.perf_counter()
    tick_now(follower, views)
    result = {
        "events": len(written),
        "file_mb": round(path.stat().st_size / 2**20, 2),
        "first_tick_of_a_new_page_s": round(time.perf_counter() - t0, 4),
    }
    for how, tick in (("now", lambda: tick_now(follower, views)), ("before", lambda: tick_before(path, views))):
        times, sizes = [], []
        for i in range(ticks):
            with path.open("a") as fh:
                fh.write("".join(json.dumps(e) + "\n" for e in second_of_events(written, i)))
            t0 = time.perf_counter()
            sizes.append(tick())
            times.append(time.perf_counter() - t0)
        result[how] = {
            "tick_s": round(statistics.median(times), 5),
            "bytes_mean": round(statistics.mean(sizes)),
            "bytes_max": max(sizes),
        }
        write_events(path, written)  # the same ticks again, for "before"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            "12h": follow("12h", 12 * 3600, 720, args.ticks, Path(tmp)),
            "1h": follow("1h", 3600, 60, args.ticks, Path(tmp)),
            "1min": follow("1min", 60, 1, args.ticks, Path(tmp)),
        }
    ratio = runs["12h"]["now"]["tick_s"] / runs["1min"]["now"]["tick_s"]
    flat = runs["12h"]["now"]["tick_s"] / runs["1h"]["now"]["tick_s"]
    print(
        json.dumps(
            {
                "runs": runs,
                "tick_ratio_12h_to_1min": round(ratio, 2),
                "target_ratio": TARGET_RATIO,
                "tick_ratio_12h_to_1h": round(flat, 2),
                "max_bytes_a_tick": runs["12h"]["now"]["bytes_max"],
                "target_bytes": TARGET_BYTES,
                "met": ratio <= TARGET_RATIO and runs["12h"]["now"]["bytes_max"] <= TARGET_BYTES,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
