"""Head/tail metrics against values computed by hand."""

import pytest

from behaviorlm.data.samples import BehaviorVocab
from behaviorlm.metrics import compute_metrics


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
