"""The starters of one round of test_jobs' lock race: `python gpu_contender.py DATA_DIR GATE_DIR WINDOW_S USER...`.

It imports once, then forks one starter per user (a fork costs milliseconds; eight fresh interpreters a round cost
seconds on a busy machine). Each starter runs the CLI's real `rl` command (user checks, events, the GPU lock, exit
codes) with RL itself replaced by a holder that writes its pid to GATE_DIR/ran-USER and waits to be killed. All
press Start at once, when every one is ready. A starter's stderr goes to GATE_DIR/err-USER, its exit status to
GATE_DIR/exit-USER. WINDOW_S widens the gap between judging a lock stale and removing it, for a lock that judges
staleness by reading its file.
"""

import os
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
data_dir, gate, window, users = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]


def hold(settings, ws, user, reporter, resume=False):
    (gate / f"ran-{user}").write_text(str(os.getpid()))
    while True:
        time.sleep(1)


sys.modules["easyphoto_app.ddpo.job"] = types.ModuleType("easyphoto_app.ddpo.job")
sys.modules["easyphoto_app.ddpo.job"].run_rl = hold

import filelock  # noqa: E401, E402, F401 - imported before the fork: the race starts at the lock

from easyphoto_app import cli, jobs  # noqa: E402, F401

if window:
    judged = jobs.GpuLock.holder

    def slow_holder(self):
        found = judged(self)
        if found is None:
            time.sleep(window)
        return found

    jobs.GpuLock.holder = slow_holder


def starter(user: str) -> int:
    err = os.open(gate / f"err-{user}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    (gate / f"ready-{user}").touch()
    while not (gate / "go").exists():
        time.sleep(0.001)
    return cli.main(["--data-dir", data_dir, "rl", "--user", user])


children = {}
for user in users:
    pid = os.fork()
    if pid == 0:
        code = starter(user)
        sys.stderr.flush()
        os._exit(code)
    children[pid] = user
while not all((gate / f"ready-{u}").exists() for u in users):
    time.sleep(0.001)
(gate / "go").touch()
for _ in users:
    pid, status = os.wait()
    (gate / f"exit-{children[pid]}").write_text(str(os.waitstatus_to_exitcode(status)))
