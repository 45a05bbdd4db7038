"""Loaded by every Python process that tests start, during mutation testing only (tests/mutmut_plugin.py puts this
folder on PYTHONPATH then). In mutmut's "stats" run a process records which functions it ran in memory; a CLI
started by a test would take that record with it when it exits, and mutmut would believe no test reaches the code
it ran. So it leaves the names in a file, and the plugin hands them to mutmut after the test."""

import atexit
import os

_hits = os.environ.get("EASYPHOTO_MUTMUT_HITS")

if _hits and os.environ.get("MUTANT_UNDER_TEST") == "stats":

    def _leave_hits() -> None:
        from mutmut.state import state

        names = state()._stats
        if names:
            with open(os.path.join(_hits, f"{os.getpid()}.txt"), "a", encoding="utf-8") as fh:
                fh.write("\n".join(sorted(names)) + "\n")

    atexit.register(_leave_hits)
