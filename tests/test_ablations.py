"""Every reproduction target runs with SMOKE=1 and leaves its table, per-job rows and plots."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT

TARGETS = {  # target -> (jobs in the SMOKE sweep, key)
    "ablation-aux": (3 * 2, "aux_ratio"),
    "ablation-few-shot": (4 * 2, "samples_per_behavior"),
    "ablation-stage-order": (8 * 2, "stage_order"),
    "ablation-components": (4 * 2, "variant"),
    "ablation-anchor-threshold": (4 * 2, "anchor_threshold"),
    "ablation-model-size": (1 * 2, "model"),
    "paper-main": (4 * 2, "stage_order"),
    "ablation-b-rate": (2 * 2, "train.b_tuning.learning_rate"),
}


def make(target: str, results: Path) -> subprocess.CompletedProcess:
    # a cache of its own; and not the outer make's variables: `make test ARGS=...` puts ARGS in the environment and
    # in MAKEFLAGS, and the sweep would hand pytest's arguments to run.py
    env = {**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS")},
           "BEHAVIORLM_STAGE_CACHE": str(results / f"stage-cache-{target}")}
    return subprocess.run(["make", "-s", target, "SMOKE=1", "SETUP=", f"PY={sys.executable}", f"RESULTS={results}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """make <target> SMOKE=1 into one results folder for the module, once per sweep: the composite targets run first
    (below) and make the sweeps they stand on (paper-main, ablation-b-rate, ablation-few-shot) themselves, so those
    are checked where they were made instead of being run a second time. Each target keeps its own stage cache, so
    the cache hits a test counts are the target's own (make names it after the target)."""
    results = tmp_path_factory.mktemp("smoke-results")
    outputs = {}

    def _made(target: str) -> tuple[Path, subprocess.CompletedProcess]:
        if not (results / target).exists():
            run = make(target, results)
            assert run.returncode == 0, (target, run.stderr[-3000:])
            for folder in results.iterdir():  # the sweeps this make left, the prerequisites included
                outputs.setdefault(folder.name, run)
        return results, outputs[target]

    return _made


@pytest.mark.slow
def test_sample_efficiency_smoke(made):
    results, _ = made("sample-efficiency")
    folder = results / "sample-efficiency"
    # BehaviorLM's half is the few-shot sweep, run once for both targets
    assert not (folder / "behaviorlm").exists() and len(list((results / "ablation-few-shot").glob("runs/*/"))) == 8
    curves = pd.read_csv(folder / "curves.csv")
    assert set(curves["method"]) == {"behaviorlm", "sasrec", "bert4rec"}
    assert (folder / "sample_efficiency.png").exists()
    assert "BehaviorLM's tail accuracy" in (folder / "report.txt").read_text()


@pytest.mark.slow
def test_tradeoff_smoke_runs_both_sweeps_first_and_draws_every_curve(made):
    results, result = made("ablation-tradeoff")
    assert result is made("paper-main")[1] is made("ablation-b-rate")[1]  # the sweeps it stands on: made by it
    jobs = pd.read_csv(results / "paper-main" / "jobs.csv")  # the tuned runs it stands on
    assert len(jobs) == 4 * 2
    rows = pd.read_csv(results / "ablation-tradeoff" / "jobs.csv")
    b_rate = pd.read_csv(results / "ablation-b-rate" / "jobs.csv")  # run first too: B-Tuning at 1e-4 and 5e-4
    assert len(b_rate) == 2 * 2
    # tiny_random B-tunes at 2e-3: paper-main's jobs are "progressive", the b-rate sweep's rates are methods of their
    # own (at nyc_cpu, whose rate is 1e-4, the b-rate sweep's 1e-4 jobs are paper-main's: tests/test_tradeoff.py)
    faster, slower = "progressive, B lr 0.0005", "progressive, B lr 0.0001"
    assert set(rows["method"]) == {"progressive", faster, slower, "joint"}
    for method in ("progressive", faster, slower):
        mine = rows[rows["method"] == method]
        assert set(mine["seed"]) == {0, 1} and sorted(set(mine["alpha"])) == [0.0, 0.25, 0.5, 0.75, 1.0]
        assert len(mine) == 2 * 5 * 6 and set(mine["target_prior"]) == {"train"}  # seeds x alphas x taus (0 added)
    joint_rows = rows[rows["method"] == "joint"]  # joint's own curve: towards the uniform prior, no interpolation
    assert set(joint_rows["target_prior"]) == {"uniform"} and set(joint_rows["alpha"]) == {1.0}
    assert sorted(set(joint_rows["tau"])) == [0.0, 0.25, 0.5, 1.0, 2.0] and len(joint_rows) == 2 * 5
    # the end points reproduce the jobs they stand for, seed by seed
    for seed in (0, 1):
        mine = jobs[jobs["seed"] == seed].set_index("stage_order")["test/acc_overall"]
        plain = rows[(rows["seed"] == seed) & (rows["tau"] == 0.0)].set_index(["method", "alpha"])["test/acc_overall"]
        # (the Makefile scores at batch 8, the jobs at their own batch: up to 3 test samples apart, --drift-samples)
        tolerance = 3 / jobs["n_test"].iloc[0] + 1e-9
        assert plain[("progressive", 1.0)] == pytest.approx(mine["progressive"], abs=tolerance)
        assert plain[("progressive", 0.0)] == pytest.approx(mine["anchor_only"], abs=tolerance)
        assert plain[(faster, 0.0)] == pytest.approx(mine["anchor_only"], abs=tolerance)  # the same A-Tuning
        assert plain[("joint", 1.0)] == pytest.approx(mine["joint"], abs=tolerance)
    table = (results / "ablation-tradeoff" / "table.md").read_text()
    assert "Adapter interpolation" in table and "WiSE-FT" in table
    assert "operating point chosen on validation" in table
    assert "## The frontier" in table and ("**Yes, by means**" in table or "**No**" in table)
    # and what the test samples say of the points it names (one line each, with its McNemar counts against joint)
    assert "By the test samples" in table and re.search(r"ahead on both axes with p < 0.05 against \d+ of 10 joint "
                                                        r"points; against joint as tuned: anchor \+\d+ / −\d+", table)
    # WiSE-FT for every tuned job: w = 1 is each job (checked by the script), w = 0 the untuned model, the same
    # function whatever the order was tuned to, so all rank alike there, as the seed's zero_shot job does
    wise = pd.read_csv(results / "ablation-tradeoff" / "wise_ft.csv")
    assert set(wise["method"]) == {"progressive", faster, slower, "joint", "anchor_only"}
    assert sorted(set(wise["wise_alpha"])) == [0.0, 0.25, 0.5, 0.75, 1.0] and len(wise) == 5 * 2 * 5
    for seed in (0, 1):
        untuned = wise[(wise["seed"] == seed) & (wise["wise_alpha"] == 0.0)]["test/acc_overall"]
        assert untuned.nunique() == 1
        zero_shot = jobs[(jobs["seed"] == seed) & (jobs["stage_order"] == "zero_shot")]["test/acc_overall"].iloc[0]
        assert untuned.iloc[0] == pytest.approx(zero_shot, abs=3 / jobs["n_test"].iloc[0] + 1e-9)
    assert (results / "ablation-tradeoff" / "anchor_vs_tail.png").exists()
    # the end points curves share are scored once, of 82 scorings a seed: w = 0 is one untuned model for the five
    # tuned jobs of a seed (4 x 2 reused: validation and test; not across seeds, whose tiny_random backbones differ),
    # and w = 1 is the adapter that the tau curves of the three progressive jobs and joint score too (4 x 2 reused)
    computed, reused = map(int, re.search(r"scorings: (\d+) computed, (\d+) reused", result.stdout).groups())
    assert (computed, reused) == (2 * (82 - 16), 2 * 16)
    # a study cut short resumes from the stage cache (make's, the target's own): run again, it scores nothing and
    # writes the same rows
    first = {name: (results / "ablation-tradeoff" / name).read_text() for name in ("jobs.csv", "wise_ft.csv")}
    again = make("ablation-tradeoff", results)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"scorings: 0 computed, {computed + reused} reused" in again.stdout
    assert first == {name: (results / "ablation-tradeoff" / name).read_text() for name in first}


@pytest.mark.slow
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_smoke_target_writes_table_rows_and_plots(made, target):
    jobs, key = TARGETS[target]
    results, result = made(target)
    folder = results / target
    assert len(pd.read_csv(folder / "jobs.csv")) == jobs
    table = pd.read_csv(folder / "table.csv")
    assert table["n_seeds"].sum() == jobs and key in table.columns
    markdown = (folder / "table.md").read_text()
    assert sum(line.startswith("|") for line in markdown.splitlines()) == len(table) + 2
    assert "± is the Student-t 95% half-width over the seeds" in markdown  # the legend under the table
    assert list(folder.glob("*.png"))
    assert "jobs" in result.stdout  # the table is printed
    # every sweep with a reference is paired against it; the anchor threshold redefines the strata (not pairable)
    if target not in ("ablation-model-size", "ablation-anchor-threshold"):
        paired = pd.read_csv(folder / "paired.csv")
        assert list(paired.columns[:8]) == ["method", "reference", "metric", "n_seeds", "mean_diff", "ci_low",
                                            "ci_high", "mix"]
        assert {"p_permutation", "p_permutation_mc_error", "se_sample_level", "p_mcnemar_seed0",
                "p_mcnemar_seed1"} <= set(paired.columns) and "p_value" not in paired.columns
        metrics = {"acc_overall", "acc_anchor", "acc_tail", "acc_at_5"}
        assert len(paired) == len(metrics) * (len(table) - 1) and set(paired["metric"]) == metrics
        # the sample-level statistic is the difference the table prints (mean over seeds of the reported metric)
        assert (paired["diff_sample_level"] - paired["mean_diff"]).abs().max() < 1e-9
        assert "Δ overall" in (folder / "table.md").read_text()
        digests = pd.read_csv(folder / "jobs.csv")["test/samples_digest"]
        assert digests.nunique() == 1  # every job of the sweep scored the same test samples
    if target == "ablation-few-shot":
        # A-Tuning and the selection scores are computed once per seed and reused by the other F values.
        infos = [json.loads(p.read_text()) for p in folder.glob("runs/*/run_info.json")]
        assert sum(info["a_tuning/cache_hit"] for info in infos) == jobs - 2


def test_sample_efficiency_says_there_is_no_ratio_without_the_behaviorlm_half(tmp_path):
    from experiments import sample_efficiency

    for index, (method, k, tail) in enumerate([("sasrec", 5, 0.01), ("sasrec", 50, 0.05), ("bert4rec", 5, 0.02)]):
        job = tmp_path / "sequence" / "runs" / str(index)
        job.mkdir(parents=True)
        (job / "metrics.json").write_text(json.dumps({
            "status": "completed", "method": method, "max_train_per_behavior": k, "samples_per_behavior": 10,
            "n_train_examples_used": 10 * k, "test/acc_tail": tail, "test/acc_overall": 0.2}))
    sample_efficiency.main([str(tmp_path)])
    report = (tmp_path / "report.txt").read_text()
    assert "no ratio: BehaviorLM at F=20 has no completed job" in report
    assert "BehaviorLM's tail accuracy" not in report  # no comparison line without the reference
    assert set(pd.read_csv(tmp_path / "curves.csv")["method"]) == {"sasrec", "bert4rec"}


def test_sample_efficiency_curves_give_no_half_width_to_seeds_that_all_scored_the_same():
    from experiments.sample_efficiency import curves

    jobs = pd.DataFrame([{"method": "bert4rec", "max_train_per_behavior": 100, "samples_per_behavior": 10,
                          "n_train_examples_used": 1000, "test/acc_tail": 0.0, "test/acc_overall": overall}
                         for overall in (0.10, 0.12, 0.14)])
    row = curves(jobs).iloc[0]
    # tail 0 in all three seeds: no spread to estimate seed noise from, so no interval (not a half-width of 0)
    assert row["test/acc_tail"] == 0.0 and pd.isna(row["test/acc_tail_ci"])
    assert row["test/acc_overall_ci"] == pytest.approx(4.303 * 0.02 / 3 ** 0.5, abs=1e-3)


def test_sample_efficiency_pairs_the_sequence_models_with_another_sweep_by_seed(tmp_path):
    from experiments import sample_efficiency

    def job(folder, **metrics):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"status": "completed", "test/samples_digest": "d",
                                                         "test/acc_overall": 0.2, "test/acc_anchor": 0.3,
                                                         **metrics}))

    for seed, tail in enumerate([0.05, 0.06, 0.07]):
        job(tmp_path / "se" / "sequence" / "runs" / str(seed), method="sasrec", max_train_per_behavior=10,
            samples_per_behavior=10, n_train_examples_used=700, seed=seed, **{"test/acc_tail": tail})
        job(tmp_path / "main" / "runs" / str(seed), stage_order="progressive", n_train_examples_used=2100, seed=seed,
            **{"test/acc_tail": 0.02})
    sample_efficiency.main([str(tmp_path / "se"), "--paired-with", str(tmp_path / "main")])
    paired = pd.read_csv(tmp_path / "se" / "paired_with.csv")
    row = paired.iloc[0]
    assert (row["method"], row["versus"], row["seeds"]) == ("sasrec", "progressive", 3)
    # per-seed differences 0.03, 0.04, 0.05: mean 0.04, sd 0.01, t(2) half-width 0.0248
    assert abs(row["test/acc_tail_delta"] - 0.04) < 1e-9 and abs(row["test/acc_tail_low"] - 0.0152) < 1e-3
    report = (tmp_path / "se" / "report.txt").read_text()
    assert "sasrec k=10 (700 samples) vs progressive (2,100), 3 seeds: tail +0.040" in report
    # anchor 0.3 against 0.3 in every seed: a zero-width t interval would read as certainty; none is printed
    assert "anchor +0.000 (seeds equal: no interval)" in report and "[+0.000, +0.000]" not in report
    # a sweep scored on other test samples is refused, not paired
    job(tmp_path / "other" / "runs" / "0", stage_order="joint", seed=0, n_train_examples_used=1,
        **{"test/acc_tail": 0.1, "test/samples_digest": "e"})
    with pytest.raises(SystemExit, match="2 different test sets"):
        sample_efficiency.main([str(tmp_path / "se"), "--paired-with", str(tmp_path / "other")])


def test_sample_efficiency_ratio_says_when_it_is_only_a_bound_or_not_reached():
    from experiments.sample_efficiency import match_sentence

    reference = pd.Series({"test/acc_tail": 0.02, "n_samples": 2000.0, "n_seeds": 1})
    curve = pd.DataFrame({"n_samples": [500.0, 1000.0, 2000.0], "test/acc_tail": [0.01, 0.03, 0.04]})
    # between 500 (0.01) and 1,000 (0.03) samples, log-linear: 500 * 2 ** 0.5 = 707
    assert match_sentence("sasrec", curve, reference, 20) == (
        "sasrec needs about 0.4x BehaviorLM's samples (707, interpolated) to reach BehaviorLM's tail accuracy 0.020 "
        "(F=20, 2,000 samples, mean of 1 seed)")
    # above the target at its smallest size: the smallest size is all the curve shows, an upper bound
    above = curve.assign(**{"test/acc_tail": [0.05, 0.05, 0.05]})
    assert "already at its smallest size, 500 samples: at most 0.2x" in match_sentence("sasrec", above, reference, 20)
    below = curve.assign(**{"test/acc_tail": [0.0, 0.01, 0.0]})
    assert match_sentence("bert4rec", below, reference, 20).startswith(
        "bert4rec does not reach BehaviorLM's tail accuracy 0.020 (F=20, 2,000 samples, mean of 1 seed) at any size "
        "tried (up to 2,000 samples)")
