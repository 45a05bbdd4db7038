"""One process of a data-parallel RL run with a reward that moves the LoRA (the demo images hold no face,
so the likeness reward would be 0 everywhere). usage: torchrun ... rl_dp_worker.py DATA_DIR [--no-grad-sync]"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from accelerate import PartialState  # noqa: E402

from easyphoto_app.ddpo import job, sync  # noqa: E402
from easyphoto_app.jobs import Reporter  # noqa: E402
from easyphoto_app.settings import load_settings  # noqa: E402
from easyphoto_app.workspace import Workspace  # noqa: E402


def brightness(images):
    return [float(np.asarray(im, dtype=np.float32).mean() / 255) for im in images], {}


if __name__ == "__main__":
    home = Path(sys.argv[1])
    if "--no-grad-sync" in sys.argv:
        sync.ProcessSync.average_grads = lambda self, params: None
    s = load_settings(home)
    s.app.device = "cpu"
    s.rl.samples_per_epoch, s.rl.sample_batch_size, s.rl.num_inference_steps = 4, 2, 4
    s.rl.epochs, s.rl.learning_rate = 2, 1e-2
    s.rl.eval_samples = 2  # one a process: their diversity needs both processes' samples
    ws = Workspace(home)
    main = PartialState(cpu=True).is_main_process  # the run's own (one per process): on the CPU, as the test runs it
    reporter = Reporter(ws.job_events("rl", "astro")) if main else Reporter()
    result = job.run_rl(s, ws, "astro", reporter, reward_fn=brightness)
    print(result.message)
