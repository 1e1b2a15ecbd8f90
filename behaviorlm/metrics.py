"""Head/tail metrics: accuracy overall, on anchors, on tail and on unseen tail; macro- and weighted-F1 overall,
on anchors and on tail; acc@k; and a per-behavior table.

F1 follows scikit-learn's convention: macro-F1 averages over the behaviors present among the targets or the
predictions (predicting an absent behavior costs), weighted-F1 weights each target behavior by its support.
The anchor/tail variants restrict the averaged behaviors to that group.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from behaviorlm.data.samples import BehaviorVocab


def _f1_table(targets: Sequence[str], predictions: Sequence[Optional[str]]) -> pd.DataFrame:
    frame = pd.DataFrame({"target": list(targets), "pred": list(predictions)})
    support = frame["target"].value_counts()
    predicted = frame["pred"].dropna().value_counts()
    hits = frame[frame["target"] == frame["pred"]]["target"].value_counts()
    labels = sorted(set(support.index) | set(predicted.index))
    table = pd.DataFrame(index=pd.Index(labels, name="behavior"))
    table["support"] = support.reindex(labels).fillna(0).astype(int)
    table["predicted"] = predicted.reindex(labels).fillna(0).astype(int)
    table["correct"] = hits.reindex(labels).fillna(0).astype(int)
    precision = np.where(table["predicted"] > 0, table["correct"] / table["predicted"].clip(lower=1), 0.0)
    recall = np.where(table["support"] > 0, table["correct"] / table["support"].clip(lower=1), 0.0)
    table["precision"] = precision
    table["recall"] = recall
    table["f1"] = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12),
                           0.0)
    return table


def _mean(values) -> Optional[float]:
    values = list(values)
    return float(np.mean(values)) if values else None


def compute_metrics(targets: Sequence[str], rankings: Sequence[Sequence[str]], vocab: BehaviorVocab,
                    k: int = 5) -> tuple[dict[str, Optional[float]], pd.DataFrame]:
    """`rankings[i]` lists predicted behaviors for sample i, best first (empty or [None]: no valid prediction).

    Returns flat metrics (None where a group has no sample) and the per-behavior table.
    """
    top1 = [r[0] if len(r) else None for r in rankings]
    correct = np.array([t == p for t, p in zip(targets, top1)], dtype=bool)
    in_top_k = np.array([t in list(r[:k]) for t, r in zip(targets, rankings)], dtype=bool)
    roles = np.array([vocab.role(t) for t in targets])
    anchor = roles == "anchor"
    tail = ~anchor
    unseen = roles == "unseen"

    table = _f1_table(targets, top1)
    table["role"] = [vocab.role(n) for n in table.index]
    table["category"] = [vocab.categories.get(n, "") for n in table.index]
    table["train_count"] = [vocab.train_counts.get(n, 0) for n in table.index]
    is_anchor = table["role"] == "anchor"
    with_support = table["support"] > 0
    metrics = {
        "acc_overall": _mean(correct),
        "acc_anchor": _mean(correct[anchor]),
        "acc_tail": _mean(correct[tail]),
        "acc_unseen_tail": _mean(correct[unseen]),
        f"acc_at_{k}": _mean(in_top_k),
        f"acc_at_{k}_anchor": _mean(in_top_k[anchor]),
        f"acc_at_{k}_tail": _mean(in_top_k[tail]),
        "macro_f1": _mean(table["f1"]),
        "macro_f1_anchor": _mean(table.loc[is_anchor, "f1"]),
        "macro_f1_tail": _mean(table.loc[~is_anchor, "f1"]),
        "weighted_f1": float(np.average(table.loc[with_support, "f1"], weights=table.loc[with_support, "support"])),
        "weighted_f1_anchor": _weighted(table, is_anchor & with_support),
        "weighted_f1_tail": _weighted(table, ~is_anchor & with_support),
        "valid_output_ratio": _mean([p is not None for p in top1]),
        "n_samples": len(targets),
        "n_anchor_samples": int(anchor.sum()),
        "n_tail_samples": int(tail.sum()),
        "n_unseen_tail_samples": int(unseen.sum()),
    }
    return metrics, table.reset_index().sort_values(["support", "behavior"], ascending=[False, True])


def _weighted(table: pd.DataFrame, rows) -> Optional[float]:
    part = table.loc[rows]
    if part["support"].sum() == 0:
        return None
    return float(np.average(part["f1"], weights=part["support"]))


def format_results_table(metrics: dict, prefix: str = "test/") -> str:
    """The head/tail/overall table printed at the end of a run."""
    def cell(key: str) -> str:
        value = metrics.get(prefix + key)
        return "   n/a" if value is None else f"{value:6.3f}"

    rows = [("accuracy", "acc_anchor", "acc_tail", "acc_overall"),
            ("acc@5", "acc_at_5_anchor", "acc_at_5_tail", "acc_at_5"),
            ("macro-F1", "macro_f1_anchor", "macro_f1_tail", "macro_f1"),
            ("weighted-F1", "weighted_f1_anchor", "weighted_f1_tail", "weighted_f1")]
    lines = [f"{'':12s} {'anchor':>7s} {'tail':>7s} {'overall':>7s}"]
    lines += [f"{name:12s} {cell(a):>7s} {cell(t):>7s} {cell(o):>7s}" for name, a, t, o in rows]
    lines.append(f"{'unseen tail':12s} {'':>7s} {cell('acc_unseen_tail'):>7s}")
    return "\n".join(lines)
