"""The evaluation protocol: a selection pool that lets selection choose, one evaluation set per sweep, Student-t
and McNemar statistics across seeds, a seeded early-stopping slice with its monitor, and baselines that see the
target's time (Wilson intervals and reweighting: test_metrics.py; what each stage trains on: test_stages.py)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from behaviorlm.baselines import SequenceModelConfig, SequenceRecommender
from behaviorlm.config import ConfigError, check_selection_pool, validate_config
from behaviorlm.data.dataset import load_dataset, stratified_subsample
from behaviorlm.data.samples import Sample, build_samples, split_samples, subsample
from behaviorlm.metrics import samples_digest
from behaviorlm.pipeline import early_stopping_slice, run
from behaviorlm.stages import validation_monitor
from conftest import run_entrypoint
from behaviorlm import collect


# ---- selection that selects -------------------------------------------------------------------------------------

def test_printing_a_config_whose_pool_is_below_f_fails_with_one_line_naming_both_keys():
    result = run_entrypoint(["samples_per_behavior=20", "selection.max_scored_per_behavior=5", "--cfg", "job"])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "selection.max_scored_per_behavior" in lines[0] and "samples_per_behavior" in lines[0]
    assert "= 5" in lines[0] and "= 20" in lines[0]


def test_pool_checks_error_below_f_warn_below_three_f_and_accept_null():
    with pytest.raises(ConfigError, match="samples_per_behavior' = 10"):
        check_selection_pool(10, 9)
    with pytest.warns(UserWarning, match="3 x samples_per_behavior"):
        check_selection_pool(10, 29)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_selection_pool(10, 30)
        check_selection_pool(10, None)


@pytest.mark.parametrize("preset", ["quick_cpu", "smoke", "paper_nyc"])
def test_every_preset_gives_selection_at_least_three_times_f_to_choose_from(compose, preset):
    cfg = compose(f"experiment={preset}")
    pool = cfg.selection.max_scored_per_behavior
    assert pool is None or pool >= 3 * cfg.samples_per_behavior
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_config(cfg)


# ---- one evaluation set per sweep ---------------------------------------------------------------------------

def test_validation_and_test_do_not_depend_on_the_seed_but_training_does(compose):
    limits = ["data=synthetic", "data.max_train_samples=200", "data.max_val_samples=30", "data.max_test_samples=40"]
    first, second = (load_dataset(compose(*limits, f"seed={seed}")) for seed in (0, 1))
    assert samples_digest(first.test) == samples_digest(second.test)
    assert samples_digest(first.val) == samples_digest(second.val)
    assert samples_digest(first.train) != samples_digest(second.train)
    other_eval = load_dataset(compose(*limits, "data.eval_seed=1"))
    assert samples_digest(other_eval.test) != samples_digest(first.test)


def test_stratified_test_draws_equal_strata_and_keeps_the_full_period_weights(compose):
    cfg = compose("data=synthetic", "anchor_threshold=0.05", "data.test_sampling=stratified",
                  "data.max_test_samples=30")
    dataset = load_dataset(cfg)
    anchors = sum(s.target in dataset.vocab.anchors for s in dataset.test)
    assert len(dataset.test) == 30 and anchors == 15
    full = load_dataset(compose("data=synthetic", "anchor_threshold=0.05"))
    full_share = sum(s.target in full.vocab.anchors for s in full.test) / len(full.test)
    assert dataset.test_weights["anchor"] == pytest.approx(full_share)
    assert full_share > 0.6  # the synthetic test period is anchor-heavy: the reweighting matters


def test_a_small_stratum_is_taken_whole_and_the_other_fills_the_rest():
    names = ["A"] * 30 + ["t1", "t2", "t3"]
    samples = [Sample("u", pd.Timestamp("2024-01-01") + pd.Timedelta(hours=i), ("A",), ((0, 0),), n)
               for i, n in enumerate(names)]

    class Vocab:
        anchors = {"A"}

    drawn, weights = stratified_subsample(samples, Vocab(), 10, seed=0)
    assert sum(s.target != "A" for s in drawn) == 3 and len(drawn) == 10
    assert weights == {"anchor": 30 / 33, "tail": 3 / 33}


def test_a_job_writes_intervals_digest_random_fill_share_and_predictions(compose, tmp_path):
    cfg = compose("experiment=smoke", "debug=fast", output_dir=tmp_path)
    run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for name in ("acc_overall", "acc_anchor"):
        assert metrics[f"test/{name}_ci_low"] <= metrics[f"test/{name}"] <= metrics[f"test/{name}_ci_high"]
    share = metrics["difficulty_selection/share_random_fill"]
    assert share == metrics.get("difficulty_selection/tier_unscored", 0) / metrics["difficulty_selection/n_selected"]
    predictions = pd.read_csv(tmp_path / "test_predictions.csv")
    assert len(predictions) == metrics["n_test"]
    assert predictions["correct"].mean() == pytest.approx(metrics["test/acc_overall"])


@pytest.mark.slow
def test_two_seeds_of_a_sweep_are_scored_on_the_same_samples(tmp_path):
    result = run_entrypoint(["-m", "seed=0,1", "experiment=smoke", "debug=fast", "data.max_train_samples=40",
                             f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    jobs = [json.loads(p.read_text()) for p in sorted(Path(tmp_path).glob("*/metrics.json"))]
    assert len(jobs) == 2 and jobs[0]["seed"] != jobs[1]["seed"]
    assert jobs[0]["test/samples_digest"] == jobs[1]["test/samples_digest"]
    ids = [pd.read_csv(p)["sample_id"].tolist() for p in sorted(Path(tmp_path).glob("*/test_predictions.csv"))]
    assert ids[0] == ids[1]


# ---- statistics across seeds ---------------------------------------------------------------------------------

def test_t_interval_and_mcnemar_match_hand_computed_values():
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.302653: half-width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert collect.t_interval(np.array([0.1, 0.2, 0.3])) == pytest.approx((0.2 - 0.248414, 0.2 + 0.248414), abs=1e-6)
    assert all(np.isnan(collect.t_interval(np.array([0.4]))))
    # b = 1, c = 6: two-sided exact p = 2 * P(X <= 1 | n = 7, 1/2) = 2 * 8 / 128
    assert collect.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert collect.mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert collect.mcnemar_exact(0, 0) == 1.0
    assert collect.mcnemar_exact(0, 10) == pytest.approx(2 / 1024)


def write_job(folder: Path, method: str, seed: int, correct: list[int], roles: list[str], digest="d0"):
    folder.mkdir(parents=True)
    correct_arr, anchor = np.array(correct), np.array([r == "anchor" for r in roles])
    metrics = {"status": "completed", "stage_order": method, "seed": seed, "test/samples_digest": digest,
               "test/acc_overall": correct_arr.mean(), "test/acc_anchor": correct_arr[anchor].mean(),
               "test/acc_tail": correct_arr[~anchor].mean(), "test/macro_f1": 0.1, "test/acc_at_5": 0.5}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    pd.DataFrame({"sample_id": [f"s{i}" for i in range(len(correct))], "target": "x", "role": roles,
                  "top5": "[]", "correct": correct}).to_csv(folder / "test_predictions.csv", index=False)


def test_collect_writes_paired_differences_with_the_clustered_permutation_test_and_per_seed_mcnemar(tmp_path):
    roles = ["anchor"] * 4 + ["tail"] * 4
    ref = {0: [1, 1, 0, 0, 0, 0, 0, 1], 1: [1, 0, 1, 0, 0, 0, 1, 0], 2: [1, 1, 1, 0, 0, 0, 0, 0]}
    new = {0: [1, 1, 0, 1, 1, 1, 0, 1], 1: [1, 0, 1, 0, 1, 0, 1, 0], 2: [1, 1, 1, 1, 1, 1, 1, 0]}
    for seed in range(3):
        write_job(tmp_path / "runs" / f"{seed}", "joint", seed, ref[seed], roles)
        write_job(tmp_path / "runs" / f"{3 + seed}", "progressive", seed, new[seed], roles)
    collect.main([str(tmp_path), "--key", "stage_order", "--reference", "joint"])
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert list(paired.columns[:8]) == ["method", "reference", "metric", "n_seeds", "mean_diff", "ci_low", "ci_high",
                                        "mix"]
    overall = paired[paired["metric"] == "acc_overall"].iloc[0]
    diffs = np.array([3, 1, 4]) / 8  # per seed: samples only the new method gets right (it never loses one)
    assert overall["mean_diff"] == pytest.approx(diffs.mean())
    assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(collect.t_interval(diffs))
    # samples are the clusters: s3, s4, s5 and s6 gain in 2, 3, 2 and 1 of the 3 seeds (the same sample counted
    # once, however many seeds it gains in); flipping each one's sign: only the all-positive and all-negative of
    # the 2^4 patterns reach |T| = 7/24, so p = 2/16 exactly (pooled McNemar would count 8 pairs: p = 0.0078)
    assert overall["diff_sample_level"] == pytest.approx(diffs.mean())
    assert overall["p_permutation"] == pytest.approx(2 / 16) and overall["p_permutation_mc_error"] == 0.0
    assert overall["p_mcnemar_seed0"] == pytest.approx(collect.mcnemar_exact(3, 0))
    assert overall["p_mcnemar_seed2"] == pytest.approx(collect.mcnemar_exact(4, 0))
    tail = paired[paired["metric"] == "acc_tail"].iloc[0]
    assert tail["p_mcnemar_seed0"] == pytest.approx(collect.mcnemar_exact(2, 0))  # s4, s5 in seed 0
    table = (tmp_path / "table.md").read_text()
    assert "Δ overall" in table and f"{diffs.mean():+.3f}" in table and "p=" in table


def test_seeds_that_gain_the_same_gives_no_interval_rather_than_a_zero_width_one(tmp_path):
    """Accuracies are counts, so seeds tie: two seeds that each gain one tail sample have a t interval of zero width,
    which would read as certainty (and would pass a verdict's 'the interval excludes 0')."""
    roles = ["anchor"] * 2 + ["tail"] * 2
    for seed in range(2):
        write_job(tmp_path / "runs" / f"{seed}", "joint", seed, [1, 0, 0, 0], roles)
        write_job(tmp_path / "runs" / f"{2 + seed}", "progressive", seed, [1, 0, 1, 0], roles)
    collect.main([str(tmp_path), "--key", "stage_order", "--reference", "joint"])
    tail = pd.read_csv(tmp_path / "paired.csv").set_index("metric").loc["acc_tail"]
    assert tail["mean_diff"] == pytest.approx(0.5) and tail["n_seeds"] == 2
    assert np.isnan(tail["ci_low"]) and np.isnan(tail["ci_high"])
    table = (tmp_path / "table.md").read_text()
    assert "+0.500 (seeds equal: no interval)" in table and "[+0.500, +0.500]" not in table
    # the legend under the table says what a value without ± and the Δ and p columns are
    assert table.rstrip().endswith("sample-level sign-flip permutation test of that difference (paired.csv has the "
                                   "rest).") and "a value alone had one seed, or seeds that all gave" in table
    assert collect.interval_over_seeds(np.array([0.1, 0.3])) == pytest.approx(collect.t_interval(np.array([0.1, 0.3])))
    # a tie in counts is a tie, whatever the floating-point rounding of the accuracies
    assert np.isnan(collect.interval_over_seeds(np.array([6 / 300 - 5 / 300, 5 / 300 - 4 / 300]))).all()


def test_collect_refuses_to_pair_jobs_scored_on_different_samples(tmp_path):
    write_job(tmp_path / "runs" / "0", "joint", 0, [1, 0], ["anchor", "tail"], digest="aaa")
    write_job(tmp_path / "runs" / "1", "progressive", 0, [1, 1], ["anchor", "tail"], digest="bbb")
    with pytest.raises(SystemExit, match="different test samples"):
        collect.main([str(tmp_path), "--key", "stage_order", "--reference", "joint"])


# ---- early stopping --------------------------------------------------------------------------------------------

def test_early_stopping_slice_is_seeded_random_and_the_same_for_every_seed(compose):
    slices = []
    for seed in (0, 1):
        cfg = compose("data=synthetic", "train.val_samples_for_early_stopping=20", f"seed={seed}")
        dataset = load_dataset(cfg)
        chosen = early_stopping_slice(cfg, dataset)
        assert chosen == subsample(dataset.val, 20, cfg.data.eval_seed) and chosen != dataset.val[:20]
        slices.append(samples_digest(chosen))
    assert slices[0] == slices[1]


def test_the_monitor_decides_what_early_stopping_maximises(caplog):
    class Model:
        def __init__(self, metrics):
            self.metrics = metrics

        def evaluate(self, samples, k):
            return self.metrics, None

    model = Model({"acc_overall": 0.5, "acc_tail": 0.2, "macro_f1": 0.1})
    assert validation_monitor(model, ["x"], "acc_tail")() == 0.2
    assert validation_monitor(model, ["x"], "macro_f1")() == 0.1
    no_tail = Model({"acc_overall": 0.5, "acc_tail": None, "macro_f1": 0.1})
    with caplog.at_level("WARNING", logger="behaviorlm.stages"):
        assert validation_monitor(no_tail, ["x"], "acc_tail")() == 0.5
    assert [r.getMessage() for r in caplog.records] == [  # the fallback is said, naming the monitor it replaces
        "the validation slice has no sample for monitor acc_tail: early stopping uses acc_overall"]


def test_an_unknown_monitor_is_a_config_error(compose):
    with pytest.raises(ConfigError, match="train.b_tuning.monitor"):
        validate_config(compose("train.b_tuning.monitor=loss"))


# ---- baselines see the target's time ---------------------------------------------------------------------------

def hour_rule_samples(seed=0):
    """The behavior is decided by the hour of the event alone (6 behaviors, hour mod 6): the order of behaviors
    carries no information, so only a model that sees the target's time can predict it."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(60):
        clock = pd.Timestamp("2024-01-01")
        for _ in range(20):
            clock = clock + pd.Timedelta(hours=int(rng.integers(1, 30)))
            rows.append((f"u{u}", clock, f"b{clock.hour % 6}", None))
    events = pd.DataFrame(rows, columns=["user", "time", "behavior", "category"])
    samples, _ = build_samples(events, 5, 2)
    return [f"b{i}" for i in range(6)], split_samples(samples, None, 0.2, 0.1)


@pytest.mark.parametrize("kind", ["sasrec", "bert4rec"])
def test_sequence_baselines_use_the_target_time_when_time_features_are_on(kind):
    names, splits = hour_rule_samples()
    accuracy = {}
    for time_features in (False, True):
        config = SequenceModelConfig(hidden=32, layers=1, heads=2, dropout=0.0, learning_rate=5e-3, batch_size=64,
                                     max_epochs=25, patience=5, time_features=time_features)
        model = SequenceRecommender(kind, names, 5, config, seed=0)
        model.fit(splits["train"], splits["val"])
        predicted = np.argmax(model.scores(splits["test"]), axis=1)
        accuracy[time_features] = np.mean([names[p] == t.target for p, t in zip(predicted, splits["test"])])
    assert accuracy[False] < 0.4 and accuracy[True] > 0.8, accuracy


def test_a_stages_validation_metrics_are_its_kept_epochs_without_scoring_again(compose, tmp_path, monkeypatch):
    import behaviorlm.pipeline as pipeline

    fresh, real_tune = {}, pipeline.tune

    def tune_then_score(bm, examples, stage_cfg, train_cfg, val_samples, *args, **kwargs):
        history = real_tune(bm, examples, stage_cfg, train_cfg, val_samples, *args, **kwargs)
        fresh[args[1]] = bm.evaluate(val_samples, k=5)[0]  # the kept adapter, scored anew
        return history

    monkeypatch.setattr(pipeline, "tune", tune_then_score)
    cfg = compose("experiment=smoke", "stage_order=anchor_only", "train.a_tuning.max_epochs=3", "cache=off",
                  "data.max_val_samples=24", "train.max_steps_per_epoch=3", output_dir=tmp_path)
    metrics = run(cfg)
    assert metrics["a_tuning/epochs"] >= 2 and 1 <= metrics["a_tuning/best_epoch"] <= metrics["a_tuning/epochs"]
    for name in ("acc_overall", "acc_anchor", "acc_at_5", "macro_f1"):
        assert metrics[f"a_tuning/val/{name}"] == pytest.approx(fresh["a_tuning"][name])


def test_collect_groups_by_several_keys_joined_by_commas(tmp_path):
    for seed in range(2):
        for job, (method, time_features) in enumerate([("sasrec", True), ("sasrec", False)]):
            folder = tmp_path / "runs" / f"{seed}{job}"
            write_job(folder, "joint", seed, [1, int(time_features)], ["anchor", "tail"])
            metrics = json.loads((folder / "metrics.json").read_text())
            (folder / "metrics.json").write_text(json.dumps({**metrics, "method": method,
                                                             "time_features": time_features}))
    collect.main([str(tmp_path), "--key", "method,time_features"])
    table = pd.read_csv(tmp_path / "table.csv").set_index("method,time_features")
    assert table.loc["sasrec True", "tail_mean"] == 1.0 and table.loc["sasrec False", "tail_mean"] == 0.0
    assert set(table["n_seeds"]) == {2}
    with pytest.raises(SystemExit, match="not metrics.json fields"):
        collect.main([str(tmp_path), "--key", "method,heads"])
