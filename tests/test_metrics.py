"""Head/tail metrics, intervals and the per-job evaluation record against values computed by hand."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from behaviorlm.data.samples import BehaviorVocab, Sample
from behaviorlm.metrics import (compute_metrics, evaluate_rankings, sample_id, samples_digest, stratified_proportion,
                                wilson_interval)


def vocab():
    return BehaviorVocab(names=["A", "B", "C", "D"], train_counts={"A": 50, "B": 30, "C": 2, "D": 0},
                         categories={"A": "x", "B": "x", "C": "y", "D": "y"}, anchors={"A", "B"})


def test_accuracy_by_group_and_acc_at_k():
    targets = ["A", "A", "B", "C", "D"]
    rankings = [["A", "B"], ["B", "A"], ["B", "C"], ["A", "C"], ["D", "A"]]
    metrics, table = compute_metrics(targets, rankings, vocab(), k=2)
    assert metrics["acc_overall"] == pytest.approx(3 / 5)
    assert metrics["acc_anchor"] == pytest.approx(2 / 3)
    assert metrics["acc_tail"] == pytest.approx(1 / 2)
    assert metrics["acc_unseen_tail"] == pytest.approx(1.0)
    assert metrics["acc_at_2"] == pytest.approx(1.0)
    # F1: A p=1/2 r=1/2 -> .5; B p=1/2 r=1 -> 2/3; C p=0 r=0 -> 0; D 1
    assert metrics["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0 + 1) / 4)
    assert metrics["macro_f1_anchor"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert metrics["weighted_f1"] == pytest.approx((2 * 0.5 + 2 / 3 + 0 + 1) / 5)
    row = table.set_index("behavior").loc["B"]
    assert (row["support"], row["predicted"], row["correct"], row["role"]) == (1, 2, 1, "anchor")


def test_invalid_predictions_count_as_wrong():
    metrics, _ = compute_metrics(["A", "B"], [[], ["B"]], vocab(), k=5)
    assert metrics["acc_overall"] == 0.5
    assert metrics["valid_output_ratio"] == 0.5


def test_results_table_and_sweep_table_follow_top_k():
    """scoring.top_k = 3 (or `evaluate --k 3`) prints acc@3, not an acc@5 row of n/a."""
    import pandas as pd

    from behaviorlm.collect import summarise
    from behaviorlm.metrics import format_results_table
    from behaviorlm.tables import to_markdown

    metrics = {"test/acc_overall": 0.2, "test/acc_anchor": 0.3, "test/acc_tail": 0.1, "test/acc_at_3": 0.45,
               "test/acc_at_3_anchor": 0.5, "test/acc_at_3_tail": 0.4, "test/macro_f1": 0.05}
    row = next(line for line in format_results_table(metrics).splitlines() if line.startswith("acc@"))
    assert row.split() == ["acc@3", "0.500", "0.400", "0.450"]
    # The whole table as a run prints it, worked out by hand: three right-aligned columns of width 7 after a
    # 12-wide label, absent values as n/a, the Wilson interval under the accuracy row, any prefix.
    full = {f"val/{key}": value for key, value in {
        "acc_anchor": 0.5, "acc_tail": 0.25, "acc_overall": 0.4, "acc_at_3_anchor": 0.75, "acc_at_3_tail": 0.5,
        "acc_at_3": 0.65, "macro_f1_anchor": 0.125, "macro_f1_tail": 0.0, "macro_f1": 0.0625,
        "weighted_f1_anchor": 0.3, "weighted_f1_tail": 0.2, "weighted_f1": 0.25, "acc_unseen_tail": 0.0,
        "acc_anchor_ci_low": 0.1, "acc_tail_ci_low": 0.05, "acc_overall_ci_low": 0.2,
        "acc_anchor_ci_high": 0.9, "acc_tail_ci_high": 0.6, "acc_overall_ci_high": 0.6}.items()}
    assert format_results_table(full, prefix="val/").splitlines() == [
        "              anchor    tail overall",
        "accuracy       0.500   0.250   0.400",
        "  95% low      0.100   0.050   0.200",
        "  95% high     0.900   0.600   0.600",
        "acc@3          0.750   0.500   0.650",
        "macro-F1       0.125   0.000   0.062",
        "weighted-F1    0.300   0.200   0.250",
        "unseen tail            0.000",
    ]
    assert format_results_table({}).splitlines()[2] == "acc@5            n/a     n/a     n/a"  # the default k
    jobs = pd.DataFrame([{**metrics, "seed": seed, "aux_ratio": 0.05} for seed in (0, 1)])
    jobs.loc[1, "test/acc_at_3"] = 0.55
    table = summarise(jobs, "aux_ratio")
    assert table.loc[0, "acc@3_mean"] == pytest.approx(0.5)
    markdown = to_markdown(table, "aux_ratio").splitlines()
    assert "acc@3" in markdown[0]
    # seeds that agree (zero-shot: one computation) have no interval to print, not "± 0.000"
    cells = [cell.strip() for cell in markdown[2].split("|")]
    assert cells[3] == "0.200" and cells[-3].startswith("0.500 ± ")


def test_every_metric_against_a_hand_worked_example():
    """Six predictions worked out by hand (k = 2): anchors A, B; tail C, D, E; E is predicted but never a target.

    top-1 predictions A B B E C A for targets A A B C C D; per-behavior F1: A 1/2, B 2/3, C 2/3, D 0, E 0."""
    vocab = BehaviorVocab(names=list("ABCDE"), train_counts={n: 10 for n in "ABCD"},  # E: never in training
                          categories={"A": "Food", "B": "Food", "C": "Shop"}, anchors={"A", "B"}, anchor_threshold=0.2)
    targets = list("AABCCD")
    rankings = [["A", "C"], ["B", "A"], ["B", "A"], ["E", "D"], ["C", "E"], ["A", "D"]]
    m, table = compute_metrics(targets, rankings, vocab, k=2)
    assert m["acc_overall"] == pytest.approx(3 / 6)
    assert (m["acc_anchor"], m["acc_tail"]) == (pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert m["acc_at_2"] == pytest.approx(5 / 6)
    assert (m["acc_at_2_anchor"], m["acc_at_2_tail"]) == (pytest.approx(1.0), pytest.approx(2 / 3))
    # macro-F1 counts E (predicted, never a target) as a behavior with F1 0: predicting it must cost
    assert m["macro_f1"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3 + 0 + 0) / 5)
    assert m["macro_f1_anchor"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["macro_f1_tail"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    # weighted by support (E has none): overall, anchors (A x2, B x1), tail (C x2, D x1)
    assert m["weighted_f1"] == pytest.approx((1 / 2 * 2 + 2 / 3 + 2 / 3 * 2) / 6)
    assert m["weighted_f1_anchor"] == pytest.approx((1 / 2 * 2 + 2 / 3) / 3)
    assert m["weighted_f1_tail"] == pytest.approx((2 / 3 * 2) / 3)
    f1 = table.set_index("behavior")["f1"]
    assert f1.to_dict() == pytest.approx({"A": 0.5, "B": 2 / 3, "C": 2 / 3, "D": 0.0, "E": 0.0})
    # the per-behavior table as per_behavior.csv stores it: counts, then precision and recall (0 where undefined)
    rows = table.set_index("behavior")
    assert rows[["support", "predicted", "correct"]].to_dict("index") == {
        "A": {"support": 2, "predicted": 2, "correct": 1}, "B": {"support": 1, "predicted": 2, "correct": 1},
        "C": {"support": 2, "predicted": 1, "correct": 1}, "D": {"support": 1, "predicted": 0, "correct": 0},
        "E": {"support": 0, "predicted": 1, "correct": 0}}
    assert all(rows[c].dtype.kind == "i" for c in ("support", "predicted", "correct"))  # the CSV says 2, not 2.0
    assert rows[["role", "category", "train_count"]].to_dict("index") == {
        "A": {"role": "anchor", "category": "Food", "train_count": 10},
        "B": {"role": "anchor", "category": "Food", "train_count": 10},
        "C": {"role": "tail", "category": "Shop", "train_count": 10},
        "D": {"role": "tail", "category": "", "train_count": 10},
        "E": {"role": "unseen", "category": "", "train_count": 0}}
    assert table["behavior"].tolist() == ["A", "C", "B", "D", "E"]  # most targets first, ties by name
    assert (m["valid_output_ratio"], m["n_samples"], m["n_anchor_samples"], m["n_tail_samples"],
            m["n_unseen_tail_samples"]) == (1.0, 6, 3, 3, 0)
    # no valid answer for the first sample; E a target never seen in training (an unseen tail behavior)
    some, _ = compute_metrics(["A", "C", "E"], [[], ["C"], ["E"]], vocab, k=1)
    assert (some["valid_output_ratio"], some["n_samples"], some["n_anchor_samples"], some["n_tail_samples"],
            some["n_unseen_tail_samples"], some["acc_unseen_tail"]) == (pytest.approx(2 / 3), 3, 1, 2, 1, 1.0)
    assert rows["precision"].to_dict() == pytest.approx({"A": 0.5, "B": 0.5, "C": 1.0, "D": 0.0, "E": 0.0})
    assert rows["recall"].to_dict() == pytest.approx({"A": 0.5, "B": 1.0, "C": 0.5, "D": 0.0, "E": 0.0})
    # precision = recall = 1/3 (X: 3 targets, 3 predictions, 1 right): F1 1/3, precision + recall below 1
    _, small = compute_metrics(list("XXXYYY"), [["X"], ["Y"], ["Y"], ["X"], ["X"], ["Y"]], vocab, k=1)
    assert small.set_index("behavior")["f1"].to_dict() == pytest.approx({"X": 1 / 3, "Y": 1 / 3})
    # acc@k reads k names deep, no deeper; k is 5 unless given
    assert compute_metrics(["A"], [["B", "C", "A"]], vocab, k=2)[0]["acc_at_2"] == 0.0
    assert compute_metrics(["A"], [["B", "C", "D", "E", "A", "C"]], vocab)[0]["acc_at_5"] == 1.0
    # a group without samples: None, not NaN (no tail target here)
    only_anchors, _ = compute_metrics(["A", "B"], [["A"], ["A"]], vocab, k=1)
    assert only_anchors["acc_tail"] is None and only_anchors["macro_f1_tail"] is None


def test_stratified_proportion_by_hand():
    """Anchor stratum: 3 of 4 right, weight 0.7; tail: 1 of 5 right, weight 0.3 (a stratum with weight but no
    sample, and one with samples but no weight, are left out)."""
    import numpy as np

    from behaviorlm.metrics import stratified_proportion

    correct = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 1], dtype=float)
    strata = {"anchor": np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool),
              "tail": np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 0], bool),
              "empty": np.zeros(10, bool), "unweighted": np.array([0] * 9 + [1], bool)}
    estimate, n_eff = stratified_proportion(correct, strata, {"anchor": 0.7, "tail": 0.3, "empty": 0.5})
    assert estimate == pytest.approx(0.7 * 3 / 4 + 0.3 * 1 / 5)  # the weights of the present strata sum to 1
    variance = 0.7 ** 2 * 0.75 * 0.25 / 4 + 0.3 ** 2 * 0.2 * 0.8 / 5
    assert n_eff == pytest.approx(estimate * (1 - estimate) / variance)
    # weights that do not sum to 1 are normalised over the strata present, in the estimate and in its variance
    assert stratified_proportion(correct, strata, {"anchor": 7, "tail": 3}) == pytest.approx((estimate, n_eff))
    # no variance (every stratum all right or all wrong): the effective size is the samples' count
    assert stratified_proportion(np.ones(10), strata, {"anchor": 0.7, "tail": 0.3}) == (1.0, 9.0)


def test_test_outputs_are_the_tables_given(tmp_path):
    import pandas as pd

    from behaviorlm.metrics import write_test_outputs

    table = pd.DataFrame({"behavior": ["A", "B"], "f1": [0.5, 0.25]})
    predictions = pd.DataFrame({"sample_id": ["u1|t|A"], "correct": [1]})
    write_test_outputs(tmp_path, table, predictions)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "per_behavior.csv"), table)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "test_predictions.csv"), predictions)


def test_samples_digest_ignores_order_and_sees_one_changed_sample():
    samples = [Sample("u", pd.Timestamp("2024-01-01") + pd.Timedelta(hours=h), ("A",), ((0, 0),), "B")
               for h in range(5)]
    assert samples_digest(samples) == samples_digest(samples[::-1])
    changed = samples[:4] + [Sample("u", samples[4].time, ("A",), ((0, 0),), "C")]
    assert samples_digest(changed) != samples_digest(samples)


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
