"""Mutation testing of the core modules as one measured number (`make mutation`; not part of `make test`).

    python -m tools.mutation.mutation                 # mutmut run (config: [tool.mutmut] in pyproject.toml), then
                                                   # results/mutation.json
    python -m tools.mutation.mutation --report-only   # re-read mutmut's results after `mutmut run NAME ...`
    python -m tools.mutation.mutation --refresh-test-map --survivors
                                                   # after adding tests: map them, re-run only the survivors

mutmut (3.x) copies the package to `mutants/`, plants one small bug at a time in the six modules of
`[tool.mutmut] only_mutate` (metrics, selection, scoring, stages, cache, data/samples) and runs the fast tests that
reach the mutated function. A mutant is *killed* when a test fails, *survived* when all pass. Some mutants cannot be
killed because they do not change behaviour (an equivalent mutant: a log message, a default that every caller
overrides); those are listed with a one-line reason in `tests/mutation_equivalents.json` and left out of the score:

    score = (killed + timed out) / (mutants - equivalent - not run)

Survivors are listed by name (`mutmut show NAME` prints the diff).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from behaviorlm.utils import PROJECT_ROOT, atomic_write_json

EQUIVALENTS = PROJECT_ROOT / "tests" / "mutation_equivalents.json"
NOT_RUN = ("not checked", "skipped", "check was interrupted by user")
# A mutant that makes a test fail, or loop until mutmut's time limit, is caught; "no tests" and "survived" are not.
DETECTED = ("killed", "timeout")


def mutmut_results() -> dict[str, str]:
    """Every mutant's status, from `mutmut results --all true` (lines 'name: status')."""
    output = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout
    statuses = {}
    for line in output.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            statuses[name] = status
    return statuses


def module_of(mutant: str) -> str:
    """'behaviorlm.metrics.x_compute_metrics__mutmut_3' -> 'behaviorlm/metrics.py'."""
    dotted = mutant.split(".x_")[0].split(".xǁ")[0]
    return dotted.replace(".", "/") + ".py"


def fastest_first(tests: list[str], durations: dict[str, float]) -> list[str]:
    """Tests by recorded duration, shortest first (unknown ones last, then by name, so the order is stable)."""
    return sorted(tests, key=lambda test: (durations.get(test, float("inf")), test))


def summarize(statuses: dict[str, str], equivalents: dict[str, str]) -> dict:
    unknown = sorted(set(equivalents) - set(statuses))
    if unknown:
        raise SystemExit(f"error: {EQUIVALENTS.name} names mutants mutmut does not know: {unknown[:3]}")
    counts = Counter(statuses.values())
    equivalent = [{"mutant": name, "reason": reason, "status": statuses[name]} for name, reason in equivalents.items()]
    scored = {n: s for n, s in statuses.items() if n not in equivalents and s not in NOT_RUN}
    killed = sum(s in DETECTED for s in scored.values())
    per_module = {}
    for name, status in scored.items():
        row = per_module.setdefault(module_of(name), {"mutants": 0, "killed": 0})
        row["mutants"] += 1
        row["killed"] += status in DETECTED
    for name, status in statuses.items():  # how much of each module this run reached
        row = per_module.setdefault(module_of(name), {"mutants": 0, "killed": 0})
        row["generated"] = row.get("generated", 0) + 1
        row["checked"] = row.get("checked", 0) + (status not in NOT_RUN)
    for row in per_module.values():
        row["score"] = row["killed"] / row["mutants"] if row["mutants"] else None
    checked = sum(s not in NOT_RUN for s in statuses.values())
    return {"mutants": len(statuses), "checked": checked, "share_checked": checked / len(statuses) if statuses else 0,
            "statuses": dict(counts), "equivalent": equivalent,
            "scored_mutants": len(scored), "killed": killed,
            "survived": sorted(n for n, s in scored.items() if s not in DETECTED),
            "score": killed / len(scored) if scored else None, "per_module": per_module}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report-only", action="store_true", help="do not run mutmut, only summarise")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("mutants", nargs="*", help="mutant name patterns for mutmut (e.g. 'behaviorlm.metrics*'); "
                                                   "default: all")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "mutation.json")
    parser.add_argument("--refresh-test-map", action="store_true",
                        help="map every selected test to the functions it reaches again (after adding tests)")
    parser.add_argument("--survivors", action="store_true",
                        help="re-run only the survivors recorded in --out (with the tests added since)")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.refresh_test_map:
        subprocess.run([sys.executable, "-m", "tools.mutation.mutmut_runner", "map-tests"], cwd=PROJECT_ROOT,
                       check=True)
    if args.survivors:
        # Named mutants are re-run even with a verdict; unnamed ones keep theirs.
        args.mutants = [*args.mutants, *json.loads(args.out.read_text())["survived"]]
    if not args.report_only:
        subprocess.run([sys.executable, "-m", "tools.mutation.mutmut_runner", "run", "--max-children",
                        str(args.max_children),
                        *args.mutants], cwd=PROJECT_ROOT, check=False)
    equivalents = json.loads(EQUIVALENTS.read_text()) if EQUIVALENTS.exists() else {}
    report = summarize(mutmut_results(), equivalents)
    report.update({"command": " ".join(["python -m tools.mutation.mutation", *sys.argv[1:]]),
                   "seconds": None if args.report_only else time.perf_counter() - started,
                   "cpu": os.cpu_count(), "tests": "[tool.mutmut] pytest_add_cli_args_test_selection in pyproject"})
    atomic_write_json(args.out, report)
    print(json.dumps({k: report[k] for k in ("mutants", "checked", "scored_mutants", "killed", "score", "statuses")},
                     indent=1))
    print(f"{len(report['survived'])} survivors (mutmut show NAME); written: {args.out}")


if __name__ == "__main__":
    main()
