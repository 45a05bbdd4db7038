"""prepare: seconds and peak RSS for 20 photos of 2000x1500 px. Prints JSON.

usage: python benchmarks/prepare.py [--backend dlib|offline|auto]
The clock starts after the backend has loaded its models (a one-off of the process).
"""

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "tests")]
import photos  # noqa: E402

from easyphoto_app.faces.prepare import prepare  # noqa: E402
from easyphoto_app.settings import FaceConfig  # noqa: E402
from easyphoto_app.workspace import Workspace  # noqa: E402


def make_photos(folder: Path, n: int = 20) -> list[Path]:
    a = photos.astronaut()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        canvas = np.full((1500, 2000, 3), rng.integers(60, 200), np.uint8)
        size = int(rng.integers(500, 900))
        face = cv2.resize(a, (size, size))
        y, x = int(rng.integers(0, 1500 - size)), int(rng.integers(0, 2000 - size))
        canvas[y : y + size, x : x + size] = face
        out.append(photos.save(canvas, folder / f"p{i:02d}.jpg", quality=92))
    return out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="dlib")
    backend_name = ap.parse_args().backend
    with tempfile.TemporaryDirectory() as tmp:
        files = make_photos(Path(tmp) / "in")
        proc, peak, done = psutil.Process(), [0.0], threading.Event()

        def watch():
            while not done.is_set():
                peak[0] = max(peak[0], proc.memory_info().rss)
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()
        from easyphoto_app.faces import get_backend
        from easyphoto_app.faces.offline import generic_face

        backend = get_backend(backend_name, Path(tmp) / "data")
        generic_face()  # built once per process
        start = time.perf_counter()
        record = prepare(
            Workspace(Path(tmp) / "data"), "bench", files, FaceConfig(backend=backend_name), backend=backend
        )
        seconds = time.perf_counter() - start
        done.set()
    print(
        json.dumps(
            {
                "benchmark": "prepare",
                "photos": len(files),
                "size": "2000x1500",
                "backend": backend.name,
                "seconds": round(seconds, 2),
                "peak_rss_mb": round(peak[0] / 2**20, 1),
                "accepted": record.accepted_count,
                "target_seconds": 10,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
