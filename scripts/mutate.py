"""Mutation testing of the core with mutmut: one small bug at a time, the tests that reach it run after each.

usage: ./run.sh mutate [--report] [--again] [--sample N] [--fast SECONDS] [MODULE ...]
       (or: python scripts/mutate.py ...)
    --report: write the report from the results so far, without running (after a run was stopped, say).
    --equivalent MUTANT REASON: list a reviewed survivor as equivalent (it changes nothing anyone can observe).
    --again: run the survivors again too (after adding tests); otherwise only mutants not judged yet run.
    --sample N: at most N of each module's mutants not judged yet, drawn at random: the score is then an estimate
        from a random sample (the report gives how many were judged and how many not run yet).
    --fast SECONDS: leave out the tests that took longer than SECONDS in mutmut's first (stats) run. A mutant that
        survives runs every test that reaches it, up to 15 minutes for a widely used function; with --fast 8 the
        33 slowest tests (754 of 899 s) stay out and such a mutant costs about 2.5 minutes. What only those tests
        would catch then counts as survived or "no tests": the score is the fast tests' score, and the report says so.
    MODULE: lora_io, lora_train, generate, workspace, faces, jobs, cli, gallery, models, settings, ddpo, portrait,
    ... (a module of easyphoto_app, or a package of it, or one file of a package: ddpo.ppo); none: all of them.
    The UI is left to the browser tests.
Writes reports/mutation.json and reports/mutation.md: killed, survived, timeouts and the score per module, the
surviving mutants with their diff, and the equivalent ones (reports/equivalent_mutants.json: mutants that change
nothing anyone can observe, each with the reason) counted apart.

Why mutmut: it mutates with libcst and switches mutants at run time (no re-import per mutant), runs only the
tests that reach the mutated function, and forks each mutant's run from a server that has collected the tests
(process_isolation = "forkserver" in pyproject.toml), so one mutant costs its tests, not a pytest start-up:
about a second when a fast test kills it. Tests that reach the code through a CLI child process are counted too
(tests/mutmut_child). Slow once: the first run records which test reaches which function (about as long as the
suite), and each run first runs the reached tests unmutated, which also builds the cached fixtures. What the runs
need from pytest is the plugin tests/mutmut_plugin.py, which mutmut loads (pyproject.toml: pytest_add_cli_args).
Do not stop a run while it says "Generating mutants": a file cut off there is dropped and made again next time.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "reports"
EQUIVALENTS = REPORTS / "equivalent_mutants.json"
MUTMUT = [sys.executable, "-m", "mutmut"]
CORE = [
    "lora_io",
    "lora_train",
    "generate",
    "workspace",
    "faces",
    "jobs",
    "cli",
    "gallery",
    "models",
    "settings",
    "ddpo",
    "portrait",
    "controlnet",
    "checkpoints",
    "precision",
    "doctor",
    "monitor",
]


def module_of(mutant: str) -> str:
    """easyphoto_app.faces.prepare.x_f__mutmut_3 -> faces; easyphoto_app.lora_io.x_f__mutmut_1 -> lora_io."""
    return mutant.split(".")[1]


def results() -> dict[str, str]:
    if not (ROOT / "mutants").is_dir():
        return {}
    out = subprocess.run([*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True, check=True)
    found = {}
    for line in out.stdout.splitlines():
        name, _, status = line.strip().partition(": ")
        if "__mutmut_" in name:
            found[name] = status
    return found


def diff_of(name: str) -> str:
    out = subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True, text=True)
    return "\n".join(line for line in out.stdout.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---"))


def function_of(mutant: str) -> str:
    return mutant.rpartition("__mutmut_")[0]


def equivalents() -> dict[tuple[str, str], dict]:
    """Reviewed equivalent mutants by function and diff: mutmut numbers a function's mutants anew when the file
    changes, and a mutant whose diff changed (the code moved) is reviewed again."""
    listed = json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else []
    return {(function_of(e["mutant"]), e["diff"]): e for e in listed}


def mark_equivalent(name: str, reason: str) -> None:
    """List a reviewed mutant as equivalent, with the diff it was reviewed on."""
    listed = [e for e in (json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else []) if e["mutant"] != name]
    diff = diff_of(name)
    if not diff:
        raise SystemExit(f"error: mutmut knows no mutant {name}")
    listed.append({"mutant": name, "diff": diff, "reason": reason})
    REPORTS.mkdir(exist_ok=True)
    EQUIVALENTS.write_text(json.dumps(sorted(listed, key=lambda e: e["mutant"]), indent=2, ensure_ascii=False) + "\n")


def summarise(statuses: dict[str, str], modules: list[str]) -> dict:
    same, matched = equivalents(), {}
    table: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[dict]] = defaultdict(list)
    for name, status in sorted(statuses.items()):
        module = module_of(name)
        if module not in modules:
            continue
        diff = diff_of(name) if status in ("survived", "no tests") else ""
        if status == "survived" and (function_of(name), diff) in same:
            status, matched[name] = "equivalent", same[function_of(name), diff]
        table[module][status] += 1
        if status in ("survived", "no tests"):
            survivors[module].append({"mutant": name, "status": status, "diff": diff})
    report = {}
    for module in modules:
        c = table[module]
        judged = c["killed"] + c["survived"] + c["no tests"] + c["timeout"]
        report[module] = {
            **dict(c),
            "score": round((c["killed"] + c["timeout"]) / judged, 3) if judged else None,
            "survivors": survivors[module],
        }
    return {"modules": report, "equivalent": [{**e, "mutant": name} for name, e in matched.items()]}


def markdown(summary: dict) -> str:
    rows = [
        "| module | killed | timeout | survived | no tests | equivalent | not run yet | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for module, r in summary["modules"].items():
        score = "-" if r["score"] is None else f"{r['score']:.0%}"
        rows.append(
            f"| {module} | {r.get('killed', 0)} | {r.get('timeout', 0)} | {r.get('survived', 0)} | "
            f"{r.get('no tests', 0)} | {r.get('equivalent', 0)} | {r.get('not checked', 0)} | {score} |"
        )
    parts = [
        "# Mutation testing (scripts/mutate.py, mutmut)",
        "",
        "Score = (killed + timeout) / (killed + timeout + survived + no tests); equivalent mutants apart.",
        *(
            [f"Run with --fast {summary['fast']}: tests slower than that were left out of mutant runs."]
            if summary.get("fast") is not None
            else []
        ),
        "A module with mutants not run yet is scored on those judged; where those were drawn at random "
        "(--sample), the score estimates the module's.",
        "",
        *rows,
        "",
    ]
    for module, r in summary["modules"].items():
        if r["survivors"]:
            parts += [f"## Survivors in {module}", ""]
            parts += [f"- `{s['mutant']}` ({s['status']})\n\n```diff\n{s['diff']}\n```" for s in r["survivors"]]
            parts.append("")
    if summary["equivalent"]:
        parts += ["## Equivalent mutants", ""] + [f"- `{e['mutant']}`: {e['reason']}" for e in summary["equivalent"]]
    return "\n".join(parts) + "\n"


def slow_tests(limit: float, listed: Path) -> list[str] | None:
    """The tests slower than limit in mutmut's stats; None before the first stats run. mutmut forgets the tests
    that a --fast run leaves out (it does not see them), so those already listed stay listed."""
    path = ROOT / "mutants" / "mutmut-stats.json"
    if not path.exists():
        return None
    durations = json.loads(path.read_text())["duration_by_test"]
    before = listed.read_text(encoding="utf-8").splitlines() if listed.exists() else []
    return sorted({t for t, s in durations.items() if s > limit} | {t for t in before if t and t not in durations})


def drop_unmutated_copies() -> list[Path]:
    """mutmut takes a file in mutants/ that is newer than its source for already mutated. A run stopped between
    copying the sources and mutating them leaves plain copies behind that stay unmutated (no .meta) for good, and
    one stopped while writing a file leaves it half-written (newer than its .meta, which comes after it).
    The plain copies' functions had no trampolines when mutmut recorded which test reaches which function, so that
    record (mutmut-stats.json) goes too and is made again."""

    def unfinished(copy: Path) -> bool:
        meta = copy.with_name(copy.name + ".meta")
        return not meta.exists() or meta.stat().st_mtime < copy.stat().st_mtime

    dropped = [copy for copy in (ROOT / "mutants" / "easyphoto_app").rglob("*.py") if unfinished(copy)]
    for copy in dropped:
        copy.unlink()
    plain = [p for p in dropped if not p.with_name(p.name + ".meta").exists()]
    if any(p.stem != "__init__" and "ui" not in p.parts and p.name != "__main__.py" for p in plain):
        (ROOT / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    return dropped


def to_run(statuses: dict[str, str], modules: list[str], again: bool, sample: int | None = None) -> list[str]:
    """What mutmut runs: the mutants not judged yet (and with --again the survivors), by name. A name pattern would
    make mutmut run every mutant it matches again, so a stopped run would start over. A module never mutated yet
    goes as a pattern: mutmut makes its mutants on that run. `sample`: at most that many of each module's mutants
    not judged yet, drawn at random (the same draw each time), so a module's score can be estimated in minutes."""

    def within(name: str, module: str) -> bool:  # module: "faces" or one file of it, "faces.quality"
        return name.startswith(f"easyphoto_app.{module}.")

    # By name, to spare a `mutmut show` per survivor: a reviewed mutant renumbered since only runs again (and still
    # counts as equivalent in the report, which matches by function and diff).
    reviewed = {e["mutant"] for e in json.loads(EQUIVALENTS.read_text())} if again and EQUIVALENTS.exists() else set()
    names = []
    for module in modules:
        mine = sorted(n for n in statuses if within(n, module))
        fresh = [n for n in mine if statuses[n] == "not checked"]
        if sample is not None:
            fresh = sorted(random.Random(module).sample(fresh, min(sample, len(fresh))))
        names += fresh + [
            n for n in mine if again and statuses[n] in ("survived", "no tests", "timeout") and n not in reviewed
        ]
        if not mine:
            names.append(f"easyphoto_app.{module}.*")
    return list(dict.fromkeys(names))


def main(argv: list[str]) -> int:
    import argparse
    import os

    ap = argparse.ArgumentParser(prog="./run.sh mutate")
    ap.add_argument("modules", nargs="*")
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--fast", type=float, default=None, metavar="SECONDS")
    ap.add_argument("--again", action="store_true")
    ap.add_argument("--sample", type=int, default=None, metavar="N")
    ap.add_argument("--equivalent", nargs=2, metavar=("MUTANT", "REASON"))
    a = ap.parse_args(argv)
    if a.equivalent:
        mark_equivalent(*a.equivalent)
        return 0
    report_only, modules = a.report, a.modules or CORE
    env = dict(os.environ)
    if a.fast is not None:  # tests/mutmut_plugin.py deselects them in mutant runs
        skip = ROOT / "mutants" / "slow-tests.txt"
        slow = slow_tests(a.fast, skip)
        if slow is not None:
            skip.write_text("\n".join(slow) + "\n")
        elif not skip.exists():
            print("--fast: no stats run yet to take test durations from; this run uses every test", file=sys.stderr)
        env["EASYPHOTO_MUTATE_SKIP"] = str(skip)
    package = ROOT / "easyphoto_app"
    unknown = [
        m for m in modules if not (package / f"{m.replace('.', '/')}.py").exists() and not (package / m).is_dir()
    ]
    if unknown:
        print(f"error: no module {', '.join(unknown)} in easyphoto_app/", file=sys.stderr)
        return 2
    if not report_only:
        drop_unmutated_copies()
        names = to_run(results(), modules, a.again, a.sample)
        for _ in range(2):  # a module edited since its mutants were made gets new ones, which the names miss
            if not names:
                break
            run = subprocess.run([*MUTMUT, "run", *names], cwd=ROOT, env=env)
            if run.returncode:
                return run.returncode
            names = [] if a.sample is not None else to_run(results(), modules, again=False)
    tops = [m.split(".")[0] for m in modules]
    summary = summarise(results(), CORE + [m for m in dict.fromkeys(tops) if m not in CORE])  # every module run so far
    summary["fast"] = a.fast
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / "mutation.json").write_text(json.dumps(summary, indent=2))
    (REPORTS / "mutation.md").write_text(markdown(summary))
    for module in dict.fromkeys(tops):
        r = summary["modules"][module]
        print(
            f"{module:12} {'-' if r['score'] is None else format(r['score'], '.0%'):>5}  "
            f"({r.get('killed', 0)} killed, {r.get('survived', 0)} survived, {r.get('no tests', 0)} reached by "
            f"no test, "
            f"{r.get('not checked', 0)} not run yet)"
        )
    print(f"report: {REPORTS / 'mutation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
