"""Sample efficiency: accuracy against the number of training samples, BehaviorLM vs SASRec / BERT4Rec.

    python -m experiments.sample_efficiency results/sample-efficiency

Reads the jobs of results/sample-efficiency/{sequence,behaviorlm}/runs/*/metrics.json (written by
`make sample-efficiency`), plots tail and overall test accuracy against the behavior samples each model was
tuned on (log x), and reports how many times more samples each sequence model needs to reach BehaviorLM's tail
accuracy at F = 20 (log-linear interpolation; "not reached" when its best stays below).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.stats import t_interval


def load(folder: Path) -> pd.DataFrame:
    rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*/runs/*/metrics.json"))]
    rows = [r for r in rows if r.get("status") == "completed"]
    if not rows:
        raise SystemExit(f"error: no completed metrics.json under {folder}/*/runs/")
    return pd.DataFrame(rows)


def curves(jobs: pd.DataFrame) -> pd.DataFrame:
    """Mean (and CI) over seeds per method and training-set size."""
    jobs = jobs.copy()
    jobs["setting"] = np.where(jobs["method"] == "behaviorlm", jobs["samples_per_behavior"],
                               jobs["max_train_per_behavior"].fillna(-1))
    rows = []
    for (method, setting), group in jobs.groupby(["method", "setting"]):
        row = {"method": method, "setting": "all" if setting == -1 else int(setting),
               "n_samples": float(group["n_train_examples_used"].mean()), "n_seeds": len(group)}
        for metric in ("test/acc_tail", "test/acc_overall"):
            low, high = t_interval(group[metric].to_numpy(dtype=float))
            row[metric] = float(group[metric].mean())
            row[f"{metric}_ci"] = (high - low) / 2
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["method", "n_samples"])


def samples_to_match(curve: pd.DataFrame, target: float, metric: str) -> float | None:
    """Smallest (log-interpolated) sample count at which the curve reaches `target`."""
    xs, ys = np.log(curve["n_samples"].to_numpy()), curve[metric].to_numpy()
    for i in range(len(xs)):
        if ys[i] >= target:
            if i == 0:
                return float(np.exp(xs[0]))
            frac = (target - ys[i - 1]) / max(ys[i] - ys[i - 1], 1e-12)
            return float(np.exp(xs[i - 1] + frac * (xs[i] - xs[i - 1])))
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reference-f", type=int, default=20)
    args = parser.parse_args(argv)
    table = curves(load(args.folder))
    table.to_csv(args.folder / "curves.csv", index=False)
    reference = table[(table["method"] == "behaviorlm") & (table["setting"] == args.reference_f)]
    lines = [table.to_string(index=False), ""]
    if len(reference):
        ref = reference.iloc[0]
        for method in sorted(set(table["method"]) - {"behaviorlm"}):
            curve = table[table["method"] == method]
            needed = samples_to_match(curve, ref["test/acc_tail"], "test/acc_tail")
            ratio = "not reached" if needed is None else f"{needed / ref['n_samples']:.1f}x"
            lines.append(f"{method} needs {ratio} BehaviorLM's samples (F={args.reference_f}, "
                         f"{ref['n_samples']:.0f} samples) to match its tail accuracy {ref['test/acc_tail']:.3f}")
    else:
        # Say so rather than print a table a reader could take for the comparison.
        lines.append(f"no ratio: BehaviorLM at F={args.reference_f} has no completed job under "
                     f"{args.folder}/behaviorlm/runs (run `make sample-efficiency` or `make ablation-few-shot`)")
    report = "\n".join(lines)
    (args.folder / "report.txt").write_text(report + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in zip(axes, ("test/acc_tail", "test/acc_overall"), ("tail", "overall")):
        for method, curve in table.groupby("method"):
            ax.errorbar(curve["n_samples"], curve[metric], yerr=curve[f"{metric}_ci"], marker="o", capsize=3,
                        label=method)
        ax.set_xscale("log")
        ax.set_xlabel("behavior samples used for training (log)")
        ax.set_ylabel(f"{title} test accuracy")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.folder / "sample_efficiency.png", dpi=120)
    print(report + f"\nwritten: {args.folder}/curves.csv, report.txt, sample_efficiency.png")


if __name__ == "__main__":
    main(sys.argv[1:])
