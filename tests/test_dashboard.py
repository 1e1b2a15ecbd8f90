"""Sweep dashboards (definitions checked offline), readable W&B runs, and a validation objective for sweepers."""

import json
import logging

import pytest
from omegaconf import OmegaConf

from behaviorlm.config import ConfigError, validate_config
from behaviorlm.dashboard import DashboardError, build_spec, definitions, main
from behaviorlm.pipeline import optimized_value
from behaviorlm.tracking import run_config, run_name

pytest.importorskip("wandb_workspaces")


def fake_sweep(root, key, values, seeds=(0, 1), group="ablation-x"):
    """A sweep folder as `make` leaves it: runs/N/metrics.json and runs/N/.hydra/config.yaml."""
    job = 0
    for seed in seeds:
        for value in values:
            folder = root / "runs" / str(job)
            (folder / ".hydra").mkdir(parents=True)
            metrics = {"status": "completed", "seed": seed, "stage_order": "progressive",
                       "test/acc_anchor": 0.3, "test/acc_tail": 0.1, "test/acc_overall": 0.2,
                       "a_tuning/final_train_loss": 1.0, "b_tuning/final_train_loss": 1.2, key: value}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            OmegaConf.save(OmegaConf.create({"logger": {"project": None, "entity": None, "group": group},
                                             "data": {"name": "foursquare_nyc"}}), folder / ".hydra" / "config.yaml")
            job += 1
    (root / "table.md").write_text("| x | y |\n|---|---|\n")
    return root


@pytest.mark.parametrize("key, values", [("aux_ratio", [0.0, 0.05, 0.2]), ("samples_per_behavior", [5, 20]),
                                         ("stage_order", ["progressive", "joint"]), ("variant", ["full", "no_aux"])])
def test_dry_run_panels_show_head_and_tail_grouped_by_the_swept_key(tmp_path, key, values):
    sweep = fake_sweep(tmp_path / "sweep", key, values)
    out = tmp_path / "spec.json"
    main([str(sweep), "--dry-run", "--output", str(out)])
    written = json.loads(out.read_text())
    spec = written["spec"]
    assert spec["swept_key"] == key and spec["group"] == "ablation-x" and spec["project"] == "behaviorlm-foursquare_nyc"
    head_tail = next(s for s in spec["sections"] if s["name"] == "Head and tail")["panels"]
    assert [p["metrics"] for p in head_tail] == [["test/acc_anchor"], ["test/acc_tail"], ["test/acc_overall"]]
    assert all(p["groupby"] == key and p["kind"] == "bar" for p in head_tail)
    # the library's own workspace model: the sweep's group only, runs grouped by the key, bars by the key
    workspace = json.dumps(written["workspace"])
    runsets = written["workspace"]["spec"]["section"]["runSets"][0]
    assert runsets["filters"]["filters"][0]["value"] == "ablation-x"
    assert runsets["grouping"] == [{"section": "config", "name": f"{key}.value"}]
    for metric in ("test/acc_anchor", "test/acc_tail", "test/acc_overall", "a_tuning/train/loss"):
        assert metric in workspace
    assert workspace.count(f'"groupBy": "{key}.value"') >= 3
    assert "test/acc_tail" in json.dumps(written["report"])


def test_a_sweep_without_a_varying_key_or_jobs_is_one_clear_error(tmp_path):
    with pytest.raises(DashboardError, match="no completed job"):
        build_spec(tmp_path)
    sweep = fake_sweep(tmp_path / "one", "aux_ratio", [0.05])
    with pytest.raises(DashboardError, match="no swept key varies"):
        build_spec(sweep)
    assert "stage_order" in json.dumps(definitions(build_spec(fake_sweep(tmp_path / "two", "stage_order",
                                                                         ["joint", "progressive"])), "me"))


def test_runs_have_readable_names_and_carry_the_hydra_choices(compose):
    assert run_name("ablation=paper_main,experiment=nyc_cpu,logger.group=pm,seed=1,stage_order=joint",
                    "joint") == "seed=1 joint"
    assert run_name(None, "progressive") == "progressive"
    config = run_config(compose(), {"variant": "no_aux", "model": "smollm2_135m"})
    assert config["variant"] == "no_aux" and config["hydra_choices"]["model"] == "smollm2_135m"
    assert run_config(compose(), {})["variant"] == "full"


def test_run_returns_a_validation_metric_and_refuses_a_test_one(compose, caplog):
    metrics = {"a_tuning/val/acc_overall": 0.2, "b_tuning/val/acc_overall": 0.25, "test/acc_overall": 0.9}
    assert optimized_value(compose("stage_order=progressive"), metrics) == 0.25
    assert optimized_value(compose("stage_order=anchor_only"), metrics) == 0.2
    assert optimized_value(compose("optimized_metric=a_tuning/val/acc_overall"), metrics) == 0.2
    assert optimized_value(compose("stage_order=zero_shot"), metrics) != optimized_value(
        compose("stage_order=zero_shot"), metrics)  # NaN: no tuning stage, nothing to optimise
    # a named metric the job lacks is a mistake worth a warning; no metric to optimise is not
    with caplog.at_level(logging.WARNING, logger="behaviorlm.pipeline"):
        optimized_value(compose("stage_order=zero_shot"), metrics)
        assert not caplog.records
        optimized_value(compose("optimized_metric=b_tuning/val/acc_tail"), metrics)
        assert "optimized_metric b_tuning/val/acc_tail is not in this job's metrics" in caplog.text
    with pytest.raises(ConfigError, match="optimized_metric' = 'test/acc_overall'"):
        validate_config(compose("optimized_metric=test/acc_overall"))
