"""The evaluation protocol: a selection pool that lets selection choose, one evaluation set per sweep, Wilson
intervals and stratified reweighting, Student-t and McNemar statistics across seeds, a seeded early-stopping
slice with its monitor, stage orders that train on what they say, and baselines that see the target's time."""

import hashlib
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
from behaviorlm.metrics import (evaluate_rankings, sample_id, samples_digest, stratified_proportion,
                                wilson_interval)
from behaviorlm.pipeline import early_stopping_slice, run
from behaviorlm.stages import validation_monitor
from conftest import run_entrypoint
from experiments import collect


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


def test_samples_digest_ignores_order_and_sees_one_changed_sample():
    samples = [Sample("u", pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h), ("A",), ((0, 0),), "B")
               for h in range(5)]
    assert samples_digest(samples) == samples_digest(samples[::-1])
    changed = samples[:4] + [Sample("u", samples[4].time, ("A",), ((0, 0),), "C")]
    assert samples_digest(changed) != samples_digest(samples)


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


# ---- per-job intervals and reweighting ------------------------------------------------------------------------

def test_wilson_interval_matches_hand_computed_values():
    # p = 0.5, n = 10: centre 0.5, half = 1.96 / (1 + 0.38415) * sqrt(0.025 + 0.0096040) = 0.26341
    assert wilson_interval(0.5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    # p = 0 keeps a positive upper bound (the normal interval would collapse to [0, 0])
    low, high = wilson_interval(0.0, 20)
    assert low == 0.0 and high == pytest.approx(3.8415 / 23.8415, abs=1e-4)
    # one trial: p = 1, n = 1: centre (1 + 1.92073) / 4.84146 = 0.60327, half 0.40483 * sqrt(0.96036) = 0.39673
    assert wilson_interval(1.0, 1) == pytest.approx((0.206549, 1.0), abs=1e-6)
    assert wilson_interval(0.5, 0) == (0.0, 1.0)  # no trials: nothing is known, the whole range
    # p = 1 at n = 16: centre + half is 1 + 2e-16 in floating point; a probability's bound stays at 1
    assert wilson_interval(1.0, 16)[1] == 1.0


def test_stratified_estimate_and_effective_size_match_hand_computation():
    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0], dtype=float)  # anchor 3/4, tail 1/4
    strata = {"anchor": np.array([True] * 4 + [False] * 4), "tail": np.array([False] * 4 + [True] * 4)}
    estimate, n_eff = stratified_proportion(correct, strata, {"anchor": 0.8, "tail": 0.2})
    assert estimate == pytest.approx(0.8 * 0.75 + 0.2 * 0.25)
    variance = 0.64 * 0.75 * 0.25 / 4 + 0.04 * 0.25 * 0.75 / 4
    assert n_eff == pytest.approx(0.65 * 0.35 / variance)


def test_evaluate_rankings_reports_intervals_digest_and_per_sample_rows():
    """Five anchor and three tail targets, ranked two names deep (k = 2), reweighted to an 80/20 test period:
    top-1 hits 1 0 1 0 0 | 1 0 0 (anchor 2/5, tail 1/3), top-2 hits 1 1 1 1 0 | 1 1 0 (anchor 4/5, tail 2/3)."""
    samples = [Sample("u", pd.Timestamp("2024-01-01") + pd.Timedelta(hours=i), ("A",), ((0, 0),), t)
               for i, t in enumerate(["A", "A", "A", "A", "A", "t", "t", "t"])]

    class Vocab:
        anchors, names, categories, train_counts = {"A"}, ["A", "t"], {}, {"A": 10, "t": 2}

        def role(self, name):
            return "anchor" if name == "A" else "tail"

    rankings = [["A", "t"], ["t", "A"], ["A", "t"], ["t", "A"], ["t"], ["t", "A"], ["A", "t"], ["A"]]
    metrics, _, predictions = evaluate_rankings(samples, rankings, Vocab(), k=2, weights={"anchor": 0.8, "tail": 0.2})
    assert metrics["acc_overall"] == pytest.approx(0.8 * 2 / 5 + 0.2 / 3)  # the period's mix, not the sample's
    assert metrics["acc_overall_sample"] == pytest.approx(3 / 8)
    assert metrics["acc_at_2"] == pytest.approx(0.8 * 4 / 5 + 0.2 * 2 / 3) and "acc_at_5" not in metrics
    assert metrics["weight_anchor"] == 0.8
    # each interval on its own stratum's count: 5 anchor samples, 3 tail samples
    assert (metrics["acc_anchor_ci_low"], metrics["acc_anchor_ci_high"]) == pytest.approx(wilson_interval(0.4, 5))
    assert (metrics["acc_tail_ci_low"], metrics["acc_tail_ci_high"]) == pytest.approx(wilson_interval(1 / 3, 3))
    assert metrics["acc_overall_ci_low"] < metrics["acc_overall"] < metrics["acc_overall_ci_high"]
    assert metrics["samples_digest"] == samples_digest(samples)
    assert list(predictions.columns) == ["sample_id", "target", "role", "top2", "correct"]
    assert predictions["sample_id"].tolist() == [sample_id(s) for s in samples]
    assert predictions["sample_id"][1] == "u|2024-01-01T01:00:00|A"  # user, time, target: one sample's identity
    assert predictions["correct"].tolist() == [1, 0, 1, 0, 0, 1, 0, 0] and predictions["correct"].dtype.kind == "i"
    # the digest is stored in every job's metrics: the same samples must give the same 16 hex digits for good
    ids = "\n".join(sorted(f"u|2024-01-01T0{i}:00:00|{t}" for i, t in enumerate("AAAAAttt")))
    assert metrics["samples_digest"] == hashlib.sha256(ids.encode()).hexdigest()[:16]
    assert predictions["role"].tolist() == ["anchor"] * 5 + ["tail"] * 3
    assert predictions["top2"].tolist()[:2] == ['["A", "t"]', '["t", "A"]']
    plain, _, _ = evaluate_rankings(samples, rankings, Vocab())  # k defaults to 5; no weights: the sample's mean
    assert plain["acc_at_5"] == 6 / 8 and plain["acc_overall"] == 3 / 8 and "weight_anchor" not in plain
    # rankings deeper than k, reweighted: acc@1 is top-1 accuracy, whatever comes after the first name
    top1, _, _ = evaluate_rankings(samples, rankings, Vocab(), k=1, weights={"anchor": 0.8, "tail": 0.2})
    assert top1["acc_at_1"] == top1["acc_overall"] == pytest.approx(0.8 * 2 / 5 + 0.2 / 3)


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


def test_collect_writes_paired_differences_and_pooled_mcnemar(tmp_path):
    roles = ["anchor"] * 4 + ["tail"] * 4
    ref = {0: [1, 1, 0, 0, 0, 0, 0, 1], 1: [1, 0, 1, 0, 0, 0, 1, 0], 2: [1, 1, 1, 0, 0, 0, 0, 0]}
    new = {0: [1, 1, 0, 1, 1, 1, 0, 1], 1: [1, 0, 1, 0, 1, 0, 1, 0], 2: [1, 1, 1, 1, 1, 1, 1, 0]}
    for seed in range(3):
        write_job(tmp_path / "runs" / f"{seed}", "joint", seed, ref[seed], roles)
        write_job(tmp_path / "runs" / f"{3 + seed}", "progressive", seed, new[seed], roles)
    collect.main([str(tmp_path), "--key", "stage_order", "--reference", "joint"])
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert list(paired.columns[:8]) == ["method", "reference", "metric", "n_seeds", "mean_diff", "ci_low", "ci_high",
                                        "p_value"]
    overall = paired[paired["metric"] == "acc_overall"].iloc[0]
    diffs = np.array([3, 1, 4]) / 8  # per seed: samples only the new method gets right (it never loses one)
    assert overall["mean_diff"] == pytest.approx(diffs.mean())
    assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(collect.t_interval(diffs))
    assert overall["p_value"] == pytest.approx(collect.mcnemar_exact(8, 0))
    tail = paired[paired["metric"] == "acc_tail"].iloc[0]
    assert tail["p_value"] == pytest.approx(collect.mcnemar_exact(6, 0))  # 2 + 1 + 3 tail wins, no loss
    table = (tmp_path / "table.md").read_text()
    assert "Δ overall" in table and f"{diffs.mean():+.3f}" in table and "p=" in table


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


# ---- stage orders train on what they say ------------------------------------------------------------------------

@pytest.mark.parametrize("stage_order,expected", [
    ("tail_first", [("b_tuning", "tail"), ("a_tuning", "anchor")]),
    ("tail_only", [("b_tuning", "tail")]),
    ("balanced_first", [("b_tuning", "both"), ("a_tuning", "anchor")]),
    ("progressive", [("a_tuning", "anchor"), ("b_tuning", "both")]),
])
def test_each_stage_trains_on_the_samples_its_order_names(compose, tmp_path, monkeypatch, stage_order, expected):
    import behaviorlm.pipeline as pipeline

    calls = []
    real_tune = pipeline.tune

    def recording_tune(bm, examples, *args, **kwargs):
        names = {tuple(bm.prompts.answer_ids(n)): n for n in bm.vocab.names}
        roles = {"anchor" if names[e.answer_ids] in bm.vocab.anchors else "tail"
                 for e in examples if e.kind == "behavior"}
        calls.append((args[4], "both" if len(roles) == 2 else roles.pop()))
        return real_tune(bm, examples, *args, **kwargs)

    monkeypatch.setattr(pipeline, "tune", recording_tune)
    cfg = compose("experiment=smoke", f"stage_order={stage_order}", "debug=fast", "cache=off",
                  "samples_per_behavior=3", "selection.max_scored_per_behavior=null", output_dir=tmp_path)
    metrics = run(cfg)
    assert calls == expected
    if stage_order in ("tail_first", "tail_only"):
        assert metrics["b_tuning/n_anchor_targets"] == 0 and metrics["b_tuning/n_tail_targets"] > 0
        per_behavior = json.loads((tmp_path / "selection.json").read_text())["per_behavior"]
        assert per_behavior and all(sum(t.values()) <= 3 for t in per_behavior.values())


# ---- the A-Tuning set: anchors plus the requested share of conversations ---------------------------------------

class ConversationPrompts:
    """The prompt builder's two calls the A-Tuning set makes, with token ids that say where they came from."""

    def __init__(self):
        self.response_limits = []

    def conversation_ids(self, messages, max_response_tokens):
        self.response_limits.append(max_response_tokens)
        return [1000 + messages[0]["id"]], [2000 + messages[0]["id"]]


def a_tuning_model(anchors):
    from types import SimpleNamespace

    from behaviorlm.data.samples import BehaviorVocab
    from behaviorlm.training import TrainExample

    vocab = BehaviorVocab(names=["Home", "Gym"], train_counts={"Home": 19, "Gym": 1}, categories={}, anchors=anchors)
    return SimpleNamespace(vocab=vocab, prompts=ConversationPrompts(), behavior_examples=lambda samples: [
        TrainExample((i,), (7,) if s.target == "Home" else (8,)) for i, s in enumerate(samples)])


def test_aux_count_is_the_share_of_the_whole_a_tuning_set_rounded():
    from behaviorlm.stages import aux_example_count

    # ratio r of the whole set: n_aux = r * n / (1 - r), rounded to the nearest count
    assert aux_example_count(95, 0.05) == 5 and aux_example_count(100, 0.2) == 25
    assert aux_example_count(30, 0.05) == 2  # 1.58 rounds up
    assert aux_example_count(7, 0.05) == 0  # 0.37 rounds down
    assert aux_example_count(0, 0.5) == 0 and aux_example_count(10, 0.0) == 0


def test_the_a_tuning_set_is_every_anchor_sample_then_seeded_conversations_at_the_requested_share():
    from behaviorlm.stages import a_tuning_set

    train = [Sample("u", pd.Timestamp("2024-01-01"), ("Gym",), ((0, 8),), t) for t in ["Home"] * 57 + ["Gym"] * 3]
    conversations = [[{"id": i, "role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
                     for i in range(40)]
    bm = a_tuning_model({"Home"})
    examples, report = a_tuning_set(bm, train, conversations, 0.05, 16, seed=3)
    behavior, aux = examples[:57], examples[57:]
    assert all(e.kind == "behavior" and e.answer_ids == (7,) for e in behavior)  # anchors only, Gym left out
    assert len(aux) == 3 and all(e.kind == "aux" for e in aux)  # round(0.05 * 57 / 0.95) = 3
    assert report == {"n_anchor_examples": 57, "n_aux_examples": 3, "aux_ratio_realised": 3 / 60}
    assert bm.prompts.response_limits == [16, 16, 16]  # long responses are cut where the config says
    picked = [e.prompt_ids[0] - 1000 for e in aux]
    assert [e.answer_ids[0] - 2000 for e in aux] == picked and len(set(picked)) == 3  # no repeats while enough
    again, _ = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.05, 16, seed=3)
    assert again == examples  # the same seed draws the same conversations
    other = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.05, 16, seed=4)[0][57:]
    assert [e.prompt_ids for e in other] != [e.prompt_ids for e in aux]
    # more conversations asked for than exist: drawn with replacement rather than failing
    few, report = a_tuning_set(a_tuning_model({"Home"}), train, conversations[:2], 0.5, 16, seed=0)
    assert report["n_aux_examples"] == 57 and {e.prompt_ids[0] for e in few[57:]} <= {1000, 1001}
    none, report = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.0, 16, seed=0)
    assert len(none) == 57 and report["aux_ratio_realised"] == 0.0
    one, _ = a_tuning_set(a_tuning_model({"Home"}), train[:19], conversations, 0.05, 16, seed=0)
    assert sum(e.kind == "aux" for e in one) == 1  # round(0.05 * 19 / 0.95) = 1
    # without replacement while there are enough: 24 of 40, and all 40 of 40, are all different conversations
    many, _ = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.3, 16, seed=0)
    assert len(many) - 57 == 24 and len({e.prompt_ids for e in many[57:]}) == 24
    every, _ = a_tuning_set(a_tuning_model({"Home"}), train[:40], conversations, 0.5, 16, seed=0)
    assert sorted(e.prompt_ids[0] - 1000 for e in every[40:]) == list(range(40))


def test_role_counts_split_a_stages_targets_into_anchors_and_tail():
    from behaviorlm.stages import role_counts

    vocab = a_tuning_model({"Home"}).vocab
    samples = [Sample("u", pd.Timestamp("2024-01-01"), ("Gym",), ((0, 8),), t) for t in ["Home"] * 5 + ["Gym"] * 2]
    assert role_counts(samples, vocab) == {"n_anchor_targets": 5, "n_tail_targets": 2}


def test_a_tuning_stage_hands_train_lora_exactly_what_the_config_and_the_model_say(monkeypatch):
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    import behaviorlm.stages as stages

    received = []
    monkeypatch.setattr(stages, "train_lora", lambda model, examples, **kwargs: received.append(kwargs) or ["ok"])
    asked = []
    bm = SimpleNamespace(model="the model", tokenizer=SimpleNamespace(pad_token_id=7), device=torch.device("cpu"),
                         amp_dtype=torch.bfloat16, dist="the dist",
                         evaluate=lambda samples, k: asked.append((samples, k)) or ({"acc_tail": 0.25,
                                                                                     "acc_overall": 0.5}, None))
    stage_cfg = OmegaConf.create({"max_epochs": 3, "learning_rate": 2e-4, "patience": 4, "monitor": "acc_tail"})
    train_cfg = OmegaConf.create({"batch_size": 6, "grad_accum": 2, "weight_decay": 0.01, "warmup_ratio": 0.1,
                                  "max_grad_norm": 0.5, "max_steps_per_epoch": 9, "early_stopping": True,
                                  "attn_implementation": "auto"})
    on_step = print
    result = stages.tune(bm, ["e"], stage_cfg, train_cfg, ["v"], seed=11, desc="a_tuning", on_step=on_step,
                         checkpoint_dir=Path("ckpt"), k=3)
    assert result == ["ok"]
    kwargs = received[-1]
    validate = kwargs.pop("validate")
    assert kwargs == {"pad_id": 7, "device": torch.device("cpu"), "amp_dtype": torch.bfloat16, "max_epochs": 3,
                      "learning_rate": 2e-4, "batch_size": 6, "grad_accum": 2, "weight_decay": 0.01,
                      "warmup_ratio": 0.1, "max_grad_norm": 0.5, "max_steps_per_epoch": 9, "patience": 4,
                      "seed": 11, "desc": "a_tuning", "on_step": on_step, "checkpoint_dir": Path("ckpt"),
                      "dist": "the dist", "objective": None,  # train_lora's answer-token default
                      "attn_implementation": "eager"}  # the CPU default of train.attn_implementation=auto
    assert validate() == 0.25 and asked == [(["v"], 3)]  # the monitor (acc_tail) on the validation slice at k
    # no early stopping without the setting or without validation samples; a given objective is used as it is
    stages.tune(bm, ["e"], stage_cfg, OmegaConf.merge(train_cfg, {"early_stopping": False}), ["v"], 0, "b")
    assert received[-1]["validate"] is None
    stages.tune(bm, ["e"], stage_cfg, train_cfg, [], 0, "b", objective="balanced")
    assert received[-1]["validate"] is None and received[-1]["objective"] == "balanced"
    stages.tune(bm, ["e"], stage_cfg, OmegaConf.merge(train_cfg, {"attn_implementation": "sdpa"}), [], 0, "b")
    assert received[-1]["attn_implementation"] == "sdpa"


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
