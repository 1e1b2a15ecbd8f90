"""Head/tail metrics: accuracy overall, on anchors, on tail and on unseen tail; macro- and weighted-F1 overall,
on anchors and on tail; acc@k; and a per-behavior table.

F1 follows scikit-learn's convention: macro-F1 averages over the behaviors present among the targets or the
predictions (predicting an absent behavior costs), weighted-F1 weights each target behavior by its support.
The anchor/tail variants restrict the averaged behaviors to that group.
"""

from __future__ import annotations

import hashlib
import json
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from behaviorlm.data.samples import BehaviorVocab, Sample
from behaviorlm.utils import atomic_write_text

Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def hits(targets: Sequence[str], rankings: Sequence[Sequence[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: is the target ranked first, and is it among the first k (boolean arrays)."""
    correct = np.array([len(r) > 0 and r[0] == t for t, r in zip(targets, rankings)], dtype=bool)
    in_top_k = np.array([t in list(r[:k]) for t, r in zip(targets, rankings)], dtype=bool)
    return correct, in_top_k


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
    correct, in_top_k = hits(targets, rankings, k)
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


def wilson_interval(p: float, n: float, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed on n trials (n may be an effective, non-integer size)."""
    if n <= 0:
        return 0.0, 1.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def stratified_proportion(correct: np.ndarray, strata: dict[str, np.ndarray],
                          weights: dict[str, float]) -> tuple[float, float]:
    """(estimate, effective sample size) of a proportion from stratified samples reweighted to `weights`.

    The estimate is sum_h w_h p_h; its variance sum_h w_h^2 p_h (1 - p_h) / n_h gives Kish's effective size
    p (1 - p) / variance, which the Wilson interval then uses (every stratum's n when the variance is 0)."""
    present = {h: mask for h, mask in strata.items() if mask.any() and weights.get(h, 0) > 0}
    total = sum(weights[h] for h in present)
    estimate = sum(weights[h] / total * correct[mask].mean() for h, mask in present.items())
    variance = sum((weights[h] / total) ** 2 * correct[mask].mean() * (1 - correct[mask].mean()) / mask.sum()
                   for h, mask in present.items())
    n_eff = estimate * (1 - estimate) / variance if variance > 0 else float(sum(m.sum() for m in present.values()))
    return float(estimate), float(n_eff)


def sample_id(sample: Sample) -> str:
    """A sample's identity across runs: user, target time and target (a user has one event per time)."""
    return f"{sample.user}|{pd.Timestamp(sample.time).isoformat()}|{sample.target}"


def samples_digest(samples: Sequence[Sample]) -> str:
    """A short hash of which samples a set holds (order-free): equal digests mean an identical evaluation set."""
    return hashlib.sha256("\n".join(sorted(sample_id(s) for s in samples)).encode()).hexdigest()[:16]


def evaluate_rankings(samples: Sequence[Sample], rankings: Sequence[Sequence[str]], vocab: BehaviorVocab, k: int = 5,
                      weights: Optional[dict[str, float]] = None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Test-set metrics with 95% Wilson intervals, the evaluation set's digest and per-sample predictions.

    With `weights` (stratified test sampling: each stratum's share of the full test period), `acc_overall` and
    `acc_at_k` are reweighted to that mix and `acc_overall_sample` keeps the plain mean over the sample; the
    F1 scores and the per-stratum accuracies are computed on the sample as drawn.
    """
    targets = [s.target for s in samples]
    metrics, table = compute_metrics(targets, rankings, vocab, k)
    correct, in_top_k = (hit.astype(float) for hit in hits(targets, rankings, k))
    anchor = np.array([t in vocab.anchors for t in targets], dtype=bool)
    strata = {"anchor": anchor, "tail": ~anchor}
    n_overall = float(len(samples))
    if weights is not None and len(samples):
        metrics["acc_overall_sample"] = metrics["acc_overall"]
        metrics["acc_overall"], n_overall = stratified_proportion(correct, strata, weights)
        metrics[f"acc_at_{k}"], _ = stratified_proportion(in_top_k, strata, weights)
        metrics["weight_anchor"] = weights["anchor"]
    for name, value, n in (("acc_overall", metrics["acc_overall"], n_overall),
                           ("acc_anchor", metrics["acc_anchor"], anchor.sum()),
                           ("acc_tail", metrics["acc_tail"], (~anchor).sum())):
        if value is not None:
            metrics[f"{name}_ci_low"], metrics[f"{name}_ci_high"] = wilson_interval(value, n)
    metrics["samples_digest"] = samples_digest(samples)
    predictions = pd.DataFrame({
        "sample_id": [sample_id(s) for s in samples], "target": targets,
        "role": [vocab.role(t) for t in targets],
        f"top{k}": [json.dumps(list(r[:k])) for r in rankings], "correct": correct.astype(int),
    })
    return metrics, table, predictions


def write_test_outputs(out, table: pd.DataFrame, predictions: pd.DataFrame) -> None:
    """per_behavior.csv, and test_predictions.csv: one row per test sample, what the paired tests compare."""
    atomic_write_text(out / "per_behavior.csv", table.to_csv(index=False))
    atomic_write_text(out / "test_predictions.csv", predictions.to_csv(index=False))


def acc_at_k_key(keys, prefix: str = "test/") -> str | None:
    """The acc@k metric among `keys` (k is scoring.top_k, 5 unless set), e.g. 'test/acc_at_3'; None if absent."""
    import re

    found = sorted(key for key in keys if re.fullmatch(re.escape(prefix) + r"acc_at_\d+", str(key)))
    return found[0] if found else None


def format_results_table(metrics: dict, prefix: str = "test/") -> str:
    """The head/tail/overall table printed at the end of a run."""
    def cell(key: str) -> str:
        value = metrics.get(prefix + key)
        return "   n/a" if value is None else f"{value:6.3f}"

    at_k = (acc_at_k_key(metrics, prefix) or f"{prefix}acc_at_5")[len(prefix):]
    rows = [("accuracy", "acc_anchor", "acc_tail", "acc_overall"),
            (at_k.replace("acc_at_", "acc@"), f"{at_k}_anchor", f"{at_k}_tail", at_k),
            ("macro-F1", "macro_f1_anchor", "macro_f1_tail", "macro_f1"),
            ("weighted-F1", "weighted_f1_anchor", "weighted_f1_tail", "weighted_f1")]
    lines = [f"{'':12s} {'anchor':>7s} {'tail':>7s} {'overall':>7s}"]
    lines += [f"{name:12s} {cell(a):>7s} {cell(t):>7s} {cell(o):>7s}" for name, a, t, o in rows]
    lines.append(f"{'unseen tail':12s} {'':>7s} {cell('acc_unseen_tail'):>7s}")
    if metrics.get(prefix + "acc_overall_ci_low") is not None:  # under the accuracy row: its 95% Wilson interval
        lines[2:2] = [f"{'  95% ' + bound:12s} " + " ".join(f"{cell(f'{name}_ci_{bound}'):>7s}"
                                                          for name in ("acc_anchor", "acc_tail", "acc_overall"))
                      for bound in ("low", "high")]
    return "\n".join(lines)
