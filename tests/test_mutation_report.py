"""The mutation score's arithmetic and the order a mutant's tests run in (tools/mutation/mutation.py)."""

import pytest

from tools.mutation.mutation import fastest_first, module_of, summarize


def test_the_score_leaves_out_equivalent_and_unrun_mutants_and_counts_timeouts_as_caught():
    statuses = {"behaviorlm.metrics.x_hits__mutmut_1": "killed", "behaviorlm.metrics.x_hits__mutmut_2": "survived",
                "behaviorlm.metrics.x_hits__mutmut_3": "survived", "behaviorlm.metrics.x_hits__mutmut_4": "timeout",
                "behaviorlm.stages.xǁBehaviorModelǁscores__mutmut_1": "killed",
                "behaviorlm.stages.xǁBehaviorModelǁscores__mutmut_2": "not checked"}
    report = summarize(statuses, {"behaviorlm.metrics.x_hits__mutmut_3": "only a log message changes"})
    # scored: hits 1 (killed), 2 (survived), 4 (timeout), scores 1 (killed); hits 3 is equivalent, scores 2 unrun
    assert (report["scored_mutants"], report["killed"], report["score"]) == (4, 3, 0.75)
    assert report["survived"] == ["behaviorlm.metrics.x_hits__mutmut_2"]
    assert (report["mutants"], report["checked"], report["share_checked"]) == (6, 5, 5 / 6)
    assert report["per_module"]["behaviorlm/metrics.py"] == {"mutants": 3, "killed": 2, "generated": 4,
                                                             "checked": 4, "score": 2 / 3}
    assert report["per_module"]["behaviorlm/stages.py"]["checked"] == 1
    assert report["equivalent"] == [{"mutant": "behaviorlm.metrics.x_hits__mutmut_3",
                                     "reason": "only a log message changes", "status": "survived"}]


def test_an_equivalent_that_names_no_known_mutant_is_an_error():
    with pytest.raises(SystemExit, match="x_gone__mutmut_9"):  # renumbered by a code change: its reason is stale
        summarize({"behaviorlm.metrics.x_hits__mutmut_1": "killed"}, {"behaviorlm.metrics.x_gone__mutmut_9": "why"})


def test_module_of_a_function_and_of_a_method_mutant():
    assert module_of("behaviorlm.data.samples.x_subsample__mutmut_3") == "behaviorlm/data/samples.py"
    assert module_of("behaviorlm.stages.xǁBehaviorModelǁrankings__mutmut_4") == "behaviorlm/stages.py"


def test_a_mutants_tests_run_fastest_first_with_unmeasured_ones_last():
    durations = {"tests/a.py::slow": 3.5, "tests/b.py::fast": 0.01, "tests/a.py::mid": 0.2}
    assert fastest_first(["tests/a.py::slow", "tests/c.py::new", "tests/b.py::fast", "tests/a.py::mid",
                          "tests/a.py::also_new"], durations) == [
        "tests/b.py::fast", "tests/a.py::mid", "tests/a.py::slow", "tests/a.py::also_new", "tests/c.py::new"]
