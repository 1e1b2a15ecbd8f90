"""Collect a sweep's metrics.json files into paper-style tables (mean ± 95% bootstrap CI over seeds) and plots.

    python -m experiments.collect results/ablation-few-shot --key samples_per_behavior
    python -m experiments.collect results/ablation-components --key variant --wandb

Reads <dir>/runs/*/metrics.json and writes, in <dir>:
  jobs.csv     one row per sweep job (its settings and test metrics)
  table.csv    one row per value of --key: n seeds, mean and 95% CI of each metric, the paper's figure if stated
  table.md     the same as markdown (also printed)
  *.png        anchor / tail / overall accuracy against the key
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

METRICS = ["test/acc_overall", "test/acc_anchor", "test/acc_tail", "test/macro_f1", "test/acc_at_5"]
LABELS = {"test/acc_overall": "overall", "test/acc_anchor": "anchor", "test/acc_tail": "tail",
          "test/macro_f1": "macro-F1", "test/acc_at_5": "acc@5"}
# What ../shared/paper/BehaviorLM-summary.md states for each ablation (Llama-8B on the paper's datasets).
PAPER = {
    "aux_ratio": {0.0: "worse than 5% (Table 6)", 0.05: "best (Table 6)", 0.2: "worse than 5% (Table 6)"},
    "variant": {"full": "reference", "no_aux": "-4.71% overall", "no_contrastive": "-5.50% overall",
                "no_difficulty": "-6.23% overall"},
    "samples_per_behavior": {20: "about 20 is enough (Fig. 3b)"},
    "stage_order": {"anchor_only": "0.39 zero-shot tail acc.", "joint": "0.29 (tail, zero-shot comparison)",
                    "progressive": "up to +27.4% tail acc. over joint"},
}


def bootstrap_ci(values: np.ndarray, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean (a single value gives a zero-width interval)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def load_jobs(sweep_dir: Path) -> pd.DataFrame:
    files = sorted(sweep_dir.glob("runs/*/metrics.json")) or sorted(sweep_dir.glob("*/metrics.json"))
    rows = []
    for path in files:
        metrics = json.loads(path.read_text())
        metrics["job"] = path.parent.name
        rows.append(metrics)
    if not rows:
        raise SystemExit(f"error: no metrics.json under {sweep_dir}/runs/*/ (did the sweep run?)")
    return pd.DataFrame(rows)


def summarise(jobs: pd.DataFrame, key: str) -> pd.DataFrame:
    if key not in jobs.columns:
        raise SystemExit(f"error: --key {key!r} is not a metrics.json field; fields include {sorted(jobs.columns)[:12]}")
    rows = []
    for value, group in jobs.groupby(key, sort=True):
        row = {key: value, "n_seeds": len(group)}
        for metric in METRICS:
            values = group[metric].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            low, high = bootstrap_ci(values)
            row[f"{LABELS[metric]}_mean"] = values.mean()
            row[f"{LABELS[metric]}_ci_low"] = low
            row[f"{LABELS[metric]}_ci_high"] = high
        row["paper"] = PAPER.get(key, {}).get(value, "")
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame, key: str) -> str:
    header = [key, "seeds"] + [LABELS[m] for m in METRICS] + ["paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[key]), str(row["n_seeds"])]
        for metric in METRICS:
            name = LABELS[metric]
            if f"{name}_mean" in row and pd.notna(row[f"{name}_mean"]):
                half = (row[f"{name}_ci_high"] - row[f"{name}_ci_low"]) / 2
                # one seed has no interval: print the value alone rather than a misleading "± 0"
                cells.append(f"{row[f'{name}_mean']:.3f} ± {half:.3f}" if row["n_seeds"] > 1
                             else f"{row[f'{name}_mean']:.3f}")
            else:
                cells.append("n/a")
        cells.append(row["paper"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, key: str, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric = pd.api.types.is_numeric_dtype(table[key])
    fig, ax = plt.subplots(figsize=(6, 4))
    positions = np.arange(len(table))
    for offset, name in enumerate(("anchor", "tail", "overall")):
        if f"{name}_mean" not in table:
            continue
        mean = table[f"{name}_mean"].to_numpy()
        err = np.vstack([mean - table[f"{name}_ci_low"], table[f"{name}_ci_high"] - mean])
        if numeric:
            ax.errorbar(table[key], mean, yerr=err, marker="o", capsize=3, label=name)
        else:
            ax.bar(positions + (offset - 1) * 0.27, mean, width=0.27, yerr=err, capsize=3, label=name)
    if numeric:
        ax.set_xlabel(key)
        if table[key].min() > 0 and table[key].max() / table[key].min() >= 10:
            ax.set_xscale("log")
    else:
        ax.set_xticks(positions, table[key].astype(str), rotation=20)
    ax.set_ylabel("test accuracy (mean, 95% CI over seeds)")
    ax.set_title(f"accuracy vs {key}")
    ax.legend()
    fig.tight_layout()
    path = out / f"accuracy_vs_{key}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def log_to_wandb(out: Path, key: str, table: pd.DataFrame, images: list[Path], group: str) -> None:
    import os

    import wandb

    with wandb.init(project=os.environ.get("WANDB_PROJECT", "behaviorlm-results"), group=group, job_type="summary",
                    dir=str(out), mode=os.environ.get("WANDB_MODE", "offline")) as run:
        run.log({f"{key}/table": wandb.Table(dataframe=table),
                 **{f"{key}/{p.stem}": wandb.Image(str(p)) for p in images}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--key", required=True, help="the metrics.json field the sweep varies")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to the sweep's W&B group")
    args = parser.parse_args(argv)
    jobs = load_jobs(args.sweep_dir)
    args.sweep_dir.mkdir(parents=True, exist_ok=True)
    jobs.to_csv(args.sweep_dir / "jobs.csv", index=False)
    completed = jobs[jobs["status"] == "completed"] if "status" in jobs else jobs
    if len(completed) < len(jobs):
        print(f"warning: {len(jobs) - len(completed)} failed jobs are left out of the table (see jobs.csv)")
    table = summarise(completed, args.key)
    table.to_csv(args.sweep_dir / "table.csv", index=False)
    markdown = to_markdown(table, args.key)
    (args.sweep_dir / "table.md").write_text(markdown + "\n")
    images = plot(table, args.key, args.sweep_dir)
    if args.wandb:
        log_to_wandb(args.sweep_dir, args.key, table, images, group=args.sweep_dir.name)
    print(f"{args.sweep_dir.name}: {len(jobs)} jobs\n{markdown}\nwritten: {args.sweep_dir}/table.md, table.csv, "
          f"jobs.csv, {', '.join(p.name for p in images)}")


if __name__ == "__main__":
    main(sys.argv[1:])
