"""The claims table decides verdicts from paired statistics, and the GPU paper-main driver runs end to end on CPU."""

import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT
from experiments.claims import CLAIMS, Claim, claims_table, decisive_n, seeds_to_resolve, verdict

TAIL_CLAIM = Claim("tail up", "paper-main", "progressive", "joint", "acc_tail", +1, 0.274)


def paired_row(diff, low, high, p, seeds=3, only_method=30, only_reference=10):
    return pd.Series({"mean_diff": diff, "ci_low": low, "ci_high": high, "p_value": p, "n_seeds": seeds,
                      "n_only_method": only_method, "n_only_reference": only_reference})


def test_verdict_needs_both_the_sample_test_and_the_seed_interval():
    assert verdict(TAIL_CLAIM, paired_row(0.04, 0.01, 0.07, 0.001), 600, 0.1)[0] == "holds"
    assert verdict(TAIL_CLAIM, paired_row(-0.04, -0.07, -0.01, 0.001), 600, 0.1)[0] == "does not hold"
    # significant on the samples but the seeds disagree: not decided
    decision, why = verdict(TAIL_CLAIM, paired_row(0.04, -0.02, 0.10, 0.001), 600, 0.1)
    assert decision == "inconclusive at this scale" and "seed interval includes 0" in why
    # one seed: no interval over seeds, whatever the p-value
    decision, why = verdict(TAIL_CLAIM, paired_row(-0.04, float("nan"), float("nan"), 1e-5, seeds=1), 600, 0.1)
    assert decision == "inconclusive at this scale" and "against the paper" in why and "one seed" in why


def test_inconclusive_row_says_how_many_predictions_would_decide():
    row = paired_row(0.005, -0.01, 0.02, 0.4, seeds=3, only_method=40, only_reference=37)
    decision, why = verdict(TAIL_CLAIM, row, 600, 0.1)
    needed = decisive_n(row, 600, 0.274 * 0.1)
    assert decision == "inconclusive at this scale" and f"{needed:,} paired test predictions" in why
    # variance of the per-sample difference: (b + c)/N - ((b - c)/N)^2, N = 1800; (1.96/d)^2 times that
    n = 1800
    variance = 77 / n - (3 / n) ** 2
    assert needed == pytest.approx(variance * (1.96 / 0.0274) ** 2, abs=1)


def test_seeds_needed_follow_the_spread_over_seeds():
    row = paired_row(-0.013, -0.075, 0.048, 0.024)  # 3 seeds: half-width 0.0615 = t(2) sd / sqrt(3)
    # sd = 0.0615 sqrt(3) / 4.303 = 0.0248; 4 seeds: t(3) sd / 2 = 0.039 < 0.046, 3 seeds: 0.0615 > 0.046
    assert seeds_to_resolve(row, 0.046) == 4
    assert seeds_to_resolve(row, 0.0001) is None  # not within 100 seeds
    decision, why = verdict(Claim("overall up", "paper-main", "progressive", "joint", "acc_overall", +1, 0.204),
                            row, 600, 0.226)
    assert decision == "inconclusive at this scale" and "about 4 seeds" in why


def test_claims_table_reads_paired_csv_and_marks_missing_sweeps(tmp_path):
    folder = tmp_path / "paper-main"
    folder.mkdir()
    pd.DataFrame([{"method": "progressive", "reference": "joint", "metric": "acc_tail", "n_seeds": 3,
                   "mean_diff": 0.05, "ci_low": 0.02, "ci_high": 0.08, "p_value": 0.002, "n_only_method": 40,
                   "n_only_reference": 10}]).to_csv(folder / "paired.csv", index=False)
    pd.DataFrame({"stage_order": ["progressive", "joint"] * 3, "test/n_samples": 600,
                  "test/acc_tail": [0.1, 0.05] * 3}).to_csv(folder / "jobs.csv", index=False)
    table = claims_table(tmp_path).set_index("claim")
    assert len(table) == len(CLAIMS)
    assert table.loc[CLAIMS[0].text, "verdict"] == "holds"
    assert table.loc[CLAIMS[0].text, "measured"] == "+0.050 [+0.020, +0.080]"
    # the overall-accuracy row of the same sweep is missing from paired.csv: not run, and it says why
    assert table.loc[CLAIMS[1].text, "verdict"] == "not run yet"
    assert "no results" not in table.loc[CLAIMS[1].text, "why"] and "acc_overall" in table.loc[CLAIMS[1].text, "why"]
    assert (table.loc[[c.text for c in CLAIMS if c.target == "ablation-aux"], "verdict"] == "not run yet").all()


def test_a_claim_reads_its_reference_by_the_key_its_target_sweeps(tmp_path):
    folder = tmp_path / "ablation-components"
    folder.mkdir()
    pd.DataFrame([{"method": "no_aux", "reference": "full", "metric": "acc_overall", "n_seeds": 3, "mean_diff": -0.01,
                   "ci_low": -0.05, "ci_high": 0.03, "p_value": 0.5, "n_only_method": 20,
                   "n_only_reference": 24}]).to_csv(folder / "paired.csv", index=False)
    # every job of a components sweep is progressive: stage_order is a constant column beside the swept variant
    pd.DataFrame({"stage_order": "progressive", "variant": ["full", "no_aux"] * 3, "test/n_samples": 600,
                  "test/acc_overall": [0.25, 0.24] * 3}).to_csv(folder / "jobs.csv", index=False)
    row = claims_table(tmp_path).set_index("claim").loc[CLAIMS[3].text]
    assert row["reference_mean"] == pytest.approx(0.25) and row["verdict"] == "inconclusive at this scale"


@pytest.mark.slow
def test_gpu_paper_main_driver_runs_on_cpu_with_a_tiny_model(tmp_path):
    out = tmp_path / "gpu-paper-main"
    env = {**os.environ, "BEHAVIORLM_STAGE_CACHE": str(tmp_path / "stage-cache")}
    result = subprocess.run([sys.executable, "-m", "experiments.gpu_paper_main", "--budget-s", "600", "--seeds", "0",
                             "--out", str(out), "--set", "model=tiny_random", "data=synthetic", "debug=fast",
                             "device=cpu"], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "gpu_run.json").read_text())
    assert run["jobs_completed"] == 4 and run["seeds"][0]["status"] == 0
    assert "experiment=paper_nyc" in run["overrides"]
    jobs = pd.read_csv(out / "jobs.csv")
    assert sorted(jobs["stage_order"]) == ["anchor_only", "joint", "progressive", "zero_shot"]
    assert jobs["test/samples_digest"].nunique() == 1
    paired = pd.read_csv(out / "paired.csv")
    assert set(paired["reference"]) == {"joint"}
    # the logit-adjustment trade-off re-ranks the progressive job's own scores: tau = 0 reproduces its accuracy
    trade = tmp_path / "tradeoff"
    # and interpolates its adapter towards the A-tuned one (the anchor_only job's): alpha = 0 reproduces that job
    result = subprocess.run([sys.executable, "-m", "experiments.tradeoff", str(out), "--taus", "1", "--alphas", "0",
                             "0.5", "--out", str(trade)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_csv(trade / "jobs.csv")
    assert len(rows) == 6 and sorted(set(rows["tau"])) == [0.0, 1.0] and set(rows["seed"]) == {0}
    assert sorted(set(rows["alpha"])) == [0.0, 0.5, 1.0]
    plain = rows[rows["tau"] == 0.0].set_index("alpha")["test/acc_overall"]
    for alpha, order in ((1.0, "progressive"), (0.0, "anchor_only")):
        assert plain[alpha] == jobs.loc[jobs["stage_order"] == order, "test/acc_overall"].item(), order
    table = (trade / "table.md").read_text()
    assert (trade / "anchor_vs_tail.png").exists() and "Chosen on validation" in table
    assert "Adapter interpolation" in table and "Logit adjustment" in table
