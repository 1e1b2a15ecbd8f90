"""mutmut's command line with each mutant's tests run fastest first (`tools.mutation.mutation` calls it).

mutmut 3.8 hands a mutant's tests to pytest in set order and pytest stops at the first failure (`-x`), so a mutant
that a 0.01 s unit test kills could first sit through the 3-4 s tiny-pipeline tests that also reach its function.
Ordering them by the durations mutmut itself recorded makes a killed mutant cost its cheapest killing test; a
surviving one still runs them all. Verdicts do not change, only the order tests run in.

`map-tests` rebuilds mutmut's map from functions to the tests that reach them, so that tests added after a first run
(which mutmut's stored map leaves out) are given to the mutants they kill. It runs every selected test once in this
process, in mutmut's own stats mode with its own collector, and stores the map; verdicts are kept, so re-run the
survivors after it (`tools.mutation.mutation --refresh-test-map --survivors`). behaviorlm is imported late
(`_sorting_submit`): imported before mutmut puts mutants/ first on sys.path, a stats pass would run the tests
against the unmutated package and map nothing.

    python -m tools.mutation.mutmut_runner run [MUTANT ...]     # as `python -m mutmut run`
    python -m tools.mutation.mutmut_runner map-tests            # after a first `run` (it needs mutmut's stats)
"""

from __future__ import annotations

import sys

from mutmut.__main__ import cli, create_mutants, run_stats_collection
from mutmut.runners.harness import PytestRunner
from mutmut.stats import load_stats
from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths
from mutmut.state import state
from mutmut.workers import isolation


def _sorting_submit(submit):
    def wrapped(self, mutant_name: str, tests: list[str], cpu_time_limit: int, estimated_time: float) -> None:
        # Imported here, not at the top: tools.mutation.mutation imports behaviorlm, and a behaviorlm imported before
        # mutmut puts mutants/ first on sys.path is the unmutated one, which every test would then use.
        from tools.mutation.mutation import fastest_first
        return submit(self, mutant_name, fastest_first(tests, state().duration_by_test), cpu_time_limit,
                      estimated_time)
    return wrapped


def map_tests() -> None:
    """Run every selected test once here in mutmut's stats mode and store the test map it records."""
    copy_src_dir()
    copy_also_copy_files()  # the current tests/ into mutants/
    setup_source_paths()  # import behaviorlm from mutants/, where the trampolines are
    if not load_stats():
        raise SystemExit("error: mutants/mutmut-stats.json missing: run `python -m tools.mutation.mutation` first")
    # The tests must run against the current code: mutmut's own generation step rewrites the mutants of changed
    # modules (resetting the verdicts of changed functions) and copies the others.
    create_mutants(1)
    state().current_function_hashes = dict(state().old_function_hashes)  # the next run still sees what changed
    state().tests_by_mangled_function_name.clear()
    state().function_dependencies.clear()
    state().duration_by_test.clear()
    # A ForkRunner collects stats in this very process, where sys.path now puts mutants/ first.
    run_stats_collection(isolation.ForkRunner(max_workers=1, test_runner=PytestRunner()))


for _runner in (isolation.ForkServerRunner, isolation.ForkRunner):
    _runner.submit = _sorting_submit(_runner.submit)

if __name__ == "__main__":
    if sys.argv[1:] == ["map-tests"]:
        map_tests()
    else:
        cli()
