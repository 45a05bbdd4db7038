"""Seconds from `python app.py` to the first HTTP 200, and the app's RSS then. Prints JSON."""

import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def main(runs: int = 3) -> None:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "settings.toml").write_text('[app]\nmodel = "demo"\n')
        for _ in range(runs):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            start = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "app.py", "--no-browser", "--port", str(port), "--data-dir", tmp],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
                    break
                except OSError:
                    time.sleep(0.05)
            elapsed = time.perf_counter() - start
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            proc.terminate()
            proc.wait()
            results.append({"seconds_to_http_200": round(elapsed, 2), "rss_mb": round(rss, 1)})
    print(
        json.dumps(
            {"benchmark": "startup", "runs": results, "best_seconds": min(r["seconds_to_http_200"] for r in results)},
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
