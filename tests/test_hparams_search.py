"""An Optuna search through the one entrypoint: trials are normal jobs, and what it optimises is validation."""

import json
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT


@pytest.mark.slow
def test_two_optuna_trials_run_and_optimise_the_validation_metric(tmp_path):
    sweep = tmp_path / "search"
    command = [sys.executable, "run.py", "-m", "hparams_search=lora_optuna", "experiment=smoke", "debug=fast",
               "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}", f"cache.dir={tmp_path}/cache"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trials = sorted(sweep.glob("*/metrics.json"))
    assert len(trials) == 2
    metrics = [json.loads(p.read_text()) for p in trials]
    assert all(m["status"] == "completed" for m in metrics)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    # what the sweeper saw is each trial's last tuning stage's validation accuracy, never a test metric
    assert best["best_value"] == pytest.approx(max(m["b_tuning/val/acc_overall"] for m in metrics))
    assert set(best["best_params"]) == {"model.lora.r", "train.a_tuning.learning_rate",
                                        "train.b_tuning.learning_rate", "train.a_tuning.max_epochs",
                                        "train.b_tuning.max_epochs"}
    # the trials really differ in the searched settings
    overrides = [(p.parent / ".hydra" / "overrides.yaml").read_text() for p in trials]
    assert overrides[0] != overrides[1] and "model.lora.r=" in overrides[0]
