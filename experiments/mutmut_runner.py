"""mutmut's command line with each mutant's tests run fastest first (`experiments.mutation` calls it).

mutmut 3.8 hands a mutant's tests to pytest in set order and pytest stops at the first failure (`-x`), so a mutant
that a 0.01 s unit test kills could first sit through the 3-4 s tiny-pipeline tests that also reach its function.
Ordering them by the durations mutmut itself recorded makes a killed mutant cost its cheapest killing test; a
surviving one still runs them all. Verdicts do not change, only the order tests run in.

    python -m experiments.mutmut_runner run [MUTANT ...]     # as `python -m mutmut run`
"""

from __future__ import annotations

from mutmut.__main__ import cli
from mutmut.state import state
from mutmut.workers import isolation

from experiments.mutation import fastest_first


def _sorting_submit(submit):
    def wrapped(self, mutant_name: str, tests: list[str], cpu_time_limit: int, estimated_time: float) -> None:
        return submit(self, mutant_name, fastest_first(tests, state().duration_by_test), cpu_time_limit,
                      estimated_time)
    return wrapped


for _runner in (isolation.ForkServerRunner, isolation.ForkRunner):
    _runner.submit = _sorting_submit(_runner.submit)

if __name__ == "__main__":
    cli()
