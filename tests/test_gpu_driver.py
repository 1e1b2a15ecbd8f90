"""The GPU claims driver (experiments/gpu_paper_main.py): a seed starts only while the budget can hold it, lanes run
side by side, and the whole driver (with the trade-off study on its jobs) runs end to end on CPU with a tiny model."""

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from conftest import ROOT


@pytest.mark.slow
def test_gpu_paper_main_driver_runs_on_cpu_with_a_tiny_model(tmp_path):
    out = tmp_path / "gpu"
    env = {**os.environ, "BEHAVIORLM_STAGE_CACHE": str(tmp_path / "stage-cache")}
    result = subprocess.run([sys.executable, "-m", "experiments.gpu_paper_main", "--budget-s", "600", "--seeds", "0",
                             "--scale", "nyc_cpu", "--sweeps", "paper-main", "ablation-b-rate", "--out", str(out),
                             "--set", "model=tiny_random", "data=synthetic", "debug=fast", "device=cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    run = json.loads((out / "gpu_run.json").read_text())
    assert run["jobs_completed"] == {"paper-main": 4, "ablation-b-rate": 2}
    assert [(r["sweep"], r["seed"], r["status"]) for r in run["seeds"]] == [("paper-main", 0, 0),
                                                                           ("ablation-b-rate", 0, 0)]
    assert "experiment=nyc_cpu" in run["overrides"] and "model.precision=mixed" in run["overrides"]
    jobs = pd.read_csv(out / "paper-main" / "jobs.csv")
    assert sorted(jobs["stage_order"]) == ["anchor_only", "joint", "progressive", "zero_shot"]
    assert set(jobs["seed"]) == {0}  # seed=0 replaced the ablation's seed list
    assert jobs["test/samples_digest"].nunique() == 1
    assert set(pd.read_csv(out / "paper-main" / "paired.csv")["reference"]) == {"joint"}
    rates = pd.read_csv(out / "ablation-b-rate" / "paired.csv")
    assert set(rates["reference"].astype(float)) == {1e-4} and set(rates["method"].astype(float)) == {5e-4}
    out = out / "paper-main"
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
    assert (trade / "anchor_vs_tail.png").exists() and "operating point chosen on validation" in table
    assert "Adapter interpolation" in table and "Logit adjustment" in table


def test_gpu_driver_starts_a_seed_only_while_the_budget_can_hold_it(tmp_path, monkeypatch):
    from experiments import gpu_paper_main

    def fake_seed(sweep, seed, runs, overrides):  # seed 0 takes 2 s and finishes; any other would take 30 s
        job = runs / f"seed{seed}_0"
        return [sys.executable, "-c", f"import pathlib, time; time.sleep({2 if seed == 0 else 30}); "
                f"p = pathlib.Path({str(job)!r}); p.mkdir(parents=True); (p / 'metrics.json').write_text('{{}}')"]

    monkeypatch.setattr(gpu_paper_main, "seed_command", fake_seed)
    # about 4 s left after seed 0's 2 s: seed 1 starts, and is cut at the deadline instead of running on
    started = time.monotonic()
    records = gpu_paper_main.run_sweep("paper-main", [0, 1], tmp_path / "a", [], deadline=started + 6.5)
    assert [(r["seed"], r["status"], r["jobs_done"]) for r in records] == [(0, 0, 1), (1, "cut by the budget", 0)]
    assert time.monotonic() - started < 9
    # about 1 s left after seed 0's 2 s: less than the slowest seed so far, so seed 1 does not start
    records = gpu_paper_main.run_sweep("paper-main", [0, 1], tmp_path / "b", [], deadline=time.monotonic() + 3.5)
    assert [(r["seed"], r["status"]) for r in records] == [(0, 0)]
    # no time left: nothing starts
    assert gpu_paper_main.run_sweep("paper-main", [0], tmp_path / "c", [], deadline=time.monotonic() - 1) == []


def test_gpu_driver_lanes_run_at_once_and_a_later_group_waits_for_the_first_groups_job(tmp_path, monkeypatch):
    from experiments import gpu_paper_main

    starts: dict[tuple[str, int], float] = {}

    def fake_seed(sweep, seed, runs, overrides):  # every seed of every sweep: 1.5 s, then one job's metrics.json
        starts[(sweep, seed)] = time.monotonic()
        job = runs / f"seed{seed}_0"
        return [sys.executable, "-c", f"import pathlib, time; time.sleep(1.5); p = pathlib.Path({str(job)!r}); "
                "p.mkdir(parents=True); (p / 'metrics.json').write_text('{}')"]

    monkeypatch.setattr(gpu_paper_main, "seed_command", fake_seed)
    groups = gpu_paper_main.sweep_groups(["paper-main,ablation-aux", "ablation-b-rate"])
    assert groups == [["paper-main", "ablation-aux"], ["ablation-b-rate"]]
    began = time.monotonic()
    lanes = gpu_paper_main.Lanes(groups, [0, 1], tmp_path, [], deadline=began + 60)
    records = lanes.run()
    assert sorted((r["sweep"], r["seed"], r["status"], r["jobs_done"]) for r in records) == [
        ("ablation-aux", 0, 0, 1), ("ablation-aux", 1, 0, 1), ("ablation-b-rate", 0, 0, 1),
        ("ablation-b-rate", 1, 0, 1), ("paper-main", 0, 0, 1), ("paper-main", 1, 0, 1)]
    # the two seeds ran side by side (serially: 6 x 1.5 s), and b-rate started once its seed's paper-main had a job
    assert time.monotonic() - began < 7
    assert abs(starts[("paper-main", 0)] - starts[("paper-main", 1)]) < 1
    for seed in (0, 1):
        assert starts[("ablation-b-rate", seed)] >= starts[("paper-main", seed)] + 1.4
    assert (tmp_path / "logs" / "ablation-aux_seed1.log").is_file()
    with pytest.raises(SystemExit, match="unknown target 'ablation-nope'"):
        gpu_paper_main.sweep_groups(["paper-main,ablation-nope"])
