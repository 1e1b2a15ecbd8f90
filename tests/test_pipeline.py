"""End to end through `run.py` and `pipeline.run` on a tiny random Llama and synthetic logs."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from behaviorlm.data.dataset import load_dataset
from behaviorlm.models import autocast_dtype
from behaviorlm.pipeline import build_behavior_model, run
from behaviorlm.stage_plan import STAGE_PLANS
from behaviorlm.stages import a_tuning_set, aux_example_count
from conftest import run_entrypoint

REQUIRED_KEYS = ["test/acc_overall", "test/acc_anchor", "test/acc_tail", "test/macro_f1", "test/weighted_f1",
                 "test/acc_at_5", "n_train", "n_test", "n_anchor_behaviors", "n_tail_behaviors"]


@pytest.mark.slow
def test_tiny_model_learns_the_synthetic_rule(compose, tmp_path):
    cfg = compose("experiment=smoke", "stage_order=anchor_only", output_dir=tmp_path)
    metrics = run(cfg)
    dataset = load_dataset(cfg)
    most_frequent = Counter(s.target for s in dataset.train).most_common(1)[0][0]
    baseline = sum(s.target == most_frequent for s in dataset.test) / len(dataset.test)
    assert metrics["test/acc_overall"] > baseline + 0.25, (metrics["test/acc_overall"], baseline)
    assert metrics["a_tuning/val/acc_overall"] > baseline + 0.2
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["test/acc_overall"] == metrics["test/acc_overall"]
    for key in REQUIRED_KEYS:
        assert key in written
    assert (tmp_path / "per_behavior.csv").exists() and (tmp_path / "adapter").is_dir()
    assert (tmp_path / "manifest.json").exists()


# What each stage order must run, in order, written out here rather than read from STAGE_PLANS (the paper's
# Fig. 4 variants differ only in order).
EXPECTED_STAGES = {
    "progressive": ["a_tuning", "difficulty_selection", "b_tuning"],
    "joint": ["joint_tuning"],
    "anchor_only": ["a_tuning"],
    "balanced_only": ["random_balanced", "b_tuning"],
    "balanced_first": ["random_balanced", "b_tuning", "a_tuning"],
    "tail_first": ["tail_balanced", "b_tuning", "a_tuning"],
    "tail_only": ["tail_balanced", "b_tuning"],
    "zero_shot": [],
}


@pytest.mark.parametrize("stage_order", sorted(EXPECTED_STAGES))
def test_each_stage_order_runs_the_stages_it_names(compose, tmp_path, stage_order):
    cfg = compose("experiment=smoke", f"stage_order={stage_order}", "debug=fast", output_dir=tmp_path)
    metrics = run(cfg)
    # every stage reports cache_hit whether it ran or was restored; metrics keep the order the stages ran in
    stages_run = [key.split("/")[0] for key in metrics if key.endswith("/cache_hit")]
    assert stages_run == EXPECTED_STAGES[stage_order]
    for key in REQUIRED_KEYS:
        assert key in metrics
    # what the forward computed in on this machine, so that collect can tell a bf16 job from an fp32 one
    assert (metrics["device_type"], metrics["compute_dtype"]) == (
        "cpu", "bfloat16" if autocast_dtype(cfg.model.precision, torch.device("cpu")) else "float32")
    if "difficulty_selection" in STAGE_PLANS[stage_order]:
        assert metrics["difficulty_selection/n_scored"] > 0
        selection = json.loads((tmp_path / "selection.json").read_text())
        assert sum(sum(v.values()) for v in selection["per_behavior"].values()) == \
            metrics["difficulty_selection/n_selected"]


@pytest.mark.parametrize("ratio", [0.0, 0.05, 0.2])
def test_aux_share_hits_the_requested_ratio(compose, tmp_path, ratio):
    cfg = compose("experiment=smoke", f"aux_ratio={ratio}", output_dir=tmp_path)
    dataset = load_dataset(cfg)
    from behaviorlm.data.conversations import load_conversations

    conversations = load_conversations(cfg.aux.path, cfg.aux.format)
    bm, _ = build_behavior_model(cfg, dataset, conversations)
    examples, report = a_tuning_set(bm, dataset.train, conversations, ratio, 16, seed=0)
    n_aux = sum(e.kind == "aux" for e in examples)
    assert n_aux == aux_example_count(report["n_anchor_examples"], ratio)
    assert abs(n_aux / len(examples) - ratio) < 1 / len(examples) + 1e-9
    anchors = [e for e in examples if e.kind == "behavior"]
    assert len(anchors) == sum(s.target in dataset.vocab.anchors for s in dataset.train)


@pytest.mark.slow
def test_aux_ratio_sweep_writes_three_metrics_files_and_three_wandb_runs(tmp_path):
    result = run_entrypoint(["-m", "aux_ratio=0,0.05,0.2", "model=tiny_random", "data=synthetic", "debug=fast",
                             "logger=wandb", f"hydra.sweep.dir={tmp_path}"], env={"WANDB_MODE": "offline"})
    assert result.returncode == 0, result.stderr[-3000:]
    files = sorted(Path(tmp_path).glob("*/metrics.json"))
    assert len(files) == 3
    ratios = sorted(json.loads(f.read_text())["aux_ratio"] for f in files)
    assert ratios == [0.0, 0.05, 0.2]
    for f in files:
        metrics = json.loads(f.read_text())
        for key in REQUIRED_KEYS:
            assert key in metrics
    runs = sorted(Path(tmp_path).glob("*/wandb/offline-run-*"))
    assert len(runs) == 3 and len({r.name.split("-")[-1] for r in runs}) == 3
    for f in files:  # each job logged its adapter, manifest and per-behavior table as a model artifact
        run_id = next((f.parent / "wandb").glob("offline-run-*")).name.split("-")[-1]
        info = json.loads((f.parent / "run_info.json").read_text())
        assert info["wandb/model_artifact"] == f"model-{run_id}:progressive"
        assert "wandb/model_artifact" not in json.loads(f.read_text())  # metrics.json stays run-independent
