"""pytest plugin for mutation testing (./run.sh mutate, scripts/mutate.py): loaded only in mutmut's runs, by
`-p tests.mutmut_plugin` in pyproject.toml's [tool.mutmut] pytest_add_cli_args. A plain test run never loads it.

It does three things:
- counts what the CLI processes that a test starts ran as reached by that test (mutmut's stats run);
- serves the session fixtures' data (a demo training: minutes) from a copy built once by the unmutated code;
- with `--fast`, leaves the slow tests out of mutant runs and runs the rest fastest first.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
UNCACHED_FIXTURES = {"prepared", "set_with_strangers"}  # module fixtures that run `prepare`: rebuilt per mutant

if os.environ.get("MUTANT_UNDER_TEST"):  # every Python process a test starts loads tests/mutmut_child/sitecustomize.py
    os.environ["EASYPHOTO_MUTMUT_HITS"] = tempfile.mkdtemp(prefix="mutmut-hits-")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(TESTS / "mutmut_child"), os.environ.get("PYTHONPATH")])
    )


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    """mutmut's stats run: count what the CLI processes of this test ran as reached by it."""
    folder = os.environ.get("EASYPHOTO_MUTMUT_HITS")
    if not folder or os.environ.get("MUTANT_UNDER_TEST") != "stats":
        return
    from mutmut.state import state

    for hits in Path(folder).glob("*.txt"):
        state()._stats.update(hits.read_text(encoding="utf-8").split())
        hits.unlink()


def _mutant_run() -> bool:
    """True in mutmut's run of the unmutated tests and in a process that tests one mutant (not in mutmut's stats,
    forced-fail or listing runs). The unmutated run builds the fixtures: a mutant's run has a time limit that a demo
    training does not fit in."""
    return os.environ.get("MUTANT_UNDER_TEST") not in (None, "stats", "fail", "list_all_tests")


@contextlib.contextmanager
def _unmutated():
    """Everything run inside, CLI children too, runs the original functions (mutmut's trampolines call the
    original when the active mutant names no module)."""
    saved = os.environ["MUTANT_UNDER_TEST"]
    os.environ["MUTANT_UNDER_TEST"] = ""
    try:
        yield
    finally:
        os.environ["MUTANT_UNDER_TEST"] = saved


def _source_version() -> str:
    digest = hashlib.sha256()
    for path in sorted((ROOT / "easyphoto_app").rglob("*.py")) + [TESTS / "conftest.py", TESTS / "photos.py"]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.hookimpl
def pytest_easyphoto_session_data(factory, name, build):
    """Under a mutant, a copy of what the unmutated code built once for this version of the source: a mutant then
    costs its tests, not a demo training (minutes) per mutant. A mutant in code that only fixtures run survives here;
    the report shows it, so it is not hidden."""
    if not _mutant_run():
        return None
    cache = Path(tempfile.gettempdir()) / "easyphoto-mutmut-fixtures" / _source_version()
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # mutmut tests several mutants at once: one of them builds, the rest wait
        if not (cache / name).exists():
            folder = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache))
            with _unmutated():
                built = build(folder)
            (cache / f"{name}.path").write_text(str(built.relative_to(folder)))
            folder.rename(cache / name)
    copy = factory.mktemp(name)
    shutil.copytree(cache / name, copy, dirs_exist_ok=True)
    return copy / (cache / f"{name}.path").read_text()


def pytest_collection_modifyitems(config, items):
    """./run.sh mutate --fast: the slow tests stay out of mutant runs (scripts/mutate.py lists them), and the tests a
    mutant runs go fastest first. mutmut stops at the first failure, and a slow test that happens to come first in
    file order can outlast the mutant's time limit (set from the tests' own times, without their fixtures)."""
    listed = os.environ.get("EASYPHOTO_MUTATE_SKIP")
    if not listed or os.environ.get("MUTANT_UNDER_TEST") == "stats":
        return
    slow = set(Path(listed).read_text(encoding="utf-8").splitlines())  # a parametrized test's id may hold spaces
    keep = [item for item in items if item.nodeid not in slow]
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid in slow])
    stats = Path(listed).with_name("mutmut-stats.json")
    if _mutant_run() and stats.exists():
        took = json.loads(stats.read_text(encoding="utf-8"))["duration_by_test"]

        def cost(item) -> float:  # mutmut times the test alone; these fixtures run the CLI in each mutant's run
            return took.get(item.nodeid, float("inf")) + 60 * bool(UNCACHED_FIXTURES & set(item.fixturenames))

        keep.sort(key=cost)  # stable: file order among equals
    items[:] = keep
