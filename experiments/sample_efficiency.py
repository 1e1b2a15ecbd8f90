"""Sample efficiency: accuracy against the number of training samples, BehaviorLM vs SASRec / BERT4Rec.

    python -m experiments.sample_efficiency results/sample-efficiency --behaviorlm results/ablation-few-shot

Reads the sequence models' jobs from results/sample-efficiency/sequence/runs/ and BehaviorLM's from the few-shot
sweep (`--behaviorlm`, which `make sample-efficiency` points at results/ablation-few-shot, so the costly half runs
once for both tables; without it, results/sample-efficiency/behaviorlm/runs/), plots tail and overall test
accuracy against the behavior samples each model was tuned on (log x), and reports how many times more samples
each sequence model needs to reach BehaviorLM's mean tail accuracy at F = 20 (log-linear interpolation; only an
upper bound when its smallest size already reaches it, none when its best stays below).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.stats import interval_over_seeds
from behaviorlm.tables import interval_words
from behaviorlm.utils import atomic_write, atomic_write_text

ONE_SEED = "(one seed: no interval)"  # a sequence model paired with one seed of the other sweep


def load(folder: Path, behaviorlm: Path | None = None) -> pd.DataFrame:
    """The completed jobs of both halves: folder/*/runs/ (the sequence models, and BehaviorLM unless `behaviorlm`
    names the few-shot sweep that holds it)."""
    from behaviorlm.sweeps import job_dirs

    paths = sorted(folder.glob("*/runs/*/metrics.json"))
    if behaviorlm is not None:
        paths = [p for p in paths if p.parent.parent.parent.name != "behaviorlm"]
        paths += [job / "metrics.json" for job in job_dirs(behaviorlm)] if behaviorlm.is_dir() else []
    rows = [json.loads(p.read_text()) for p in paths]
    rows = [r for r in rows if r.get("status") == "completed"]
    if not rows:
        raise SystemExit(f"error: no completed metrics.json under {folder}/*/runs/"
                         + (f" or {behaviorlm}/runs/" if behaviorlm is not None else ""))
    return pd.DataFrame(rows)


def curves(jobs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per method and training-set size, with the Student-t 95% half-width: NaN for one seed or
    for seeds that all gave the same accuracy (stats.interval_over_seeds), not the certainty of a zero half-width."""
    jobs = jobs.copy()
    jobs["setting"] = np.where(jobs["method"] == "behaviorlm", jobs["samples_per_behavior"],
                               jobs["max_train_per_behavior"].fillna(-1))
    rows = []
    for (method, setting), group in jobs.groupby(["method", "setting"]):
        row = {"method": method, "setting": "all" if setting == -1 else int(setting),
               "n_samples": float(group["n_train_examples_used"].mean()), "n_seeds": len(group)}
        for metric in ("test/acc_tail", "test/acc_overall"):
            low, high = interval_over_seeds(group[metric].to_numpy(dtype=float))
            row[metric] = float(group[metric].mean())
            row[f"{metric}_ci"] = (high - low) / 2
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["method", "n_samples"])


PAIRED_METRICS = ("test/acc_tail", "test/acc_anchor", "test/acc_overall")


def with_size_label(sequence: pd.DataFrame) -> pd.DataFrame:
    """A `k` column naming each sequence job's training-set size: samples per behavior, or "all"."""
    return sequence.assign(k=sequence["max_train_per_behavior"].map(lambda k: "all" if pd.isna(k) else str(int(k))))


def seed_deltas(mine: pd.DataFrame, theirs: pd.DataFrame, metric: str) -> np.ndarray:
    """mine - theirs in `metric`, seed by seed, over the seeds both ran (frames indexed by seed)."""
    seeds = sorted(set(mine.index) & set(theirs.index))
    return mine.loc[seeds, metric].to_numpy(dtype=float) - theirs.loc[seeds, metric].to_numpy(dtype=float)


def paired_with(sequence: pd.DataFrame, sweep_dir: Path) -> pd.DataFrame:
    """Each sequence model and size against each stage order of another sweep on the same test set (paper-main's
    BehaviorLM at its own F, say): the per-seed difference sequence - order, mean and Student-t 95% over the seeds
    both ran. Refuses jobs scored on different test samples."""
    from behaviorlm.sweeps import completed_jobs

    other = pd.DataFrame(list(completed_jobs(sweep_dir).values()))
    if other.empty or "stage_order" not in other:
        raise SystemExit(f"error: {sweep_dir}: no completed job with a stage_order to pair with")
    digests = set(sequence["test/samples_digest"]) | set(other["test/samples_digest"])
    if len(digests) != 1:
        raise SystemExit(f"error: {sweep_dir}: its jobs and the sequence models' were tested on {len(digests)} "
                         f"different test sets (test/samples_digest {sorted(digests)}): no paired difference")
    rows = []
    for (method, k), group in with_size_label(sequence).groupby(["method", "k"]):
        for order, reference in other.groupby("stage_order"):
            mine, theirs = group.set_index("seed"), reference.set_index("seed")
            row = {"method": method, "k": k, "samples": float(group["n_train_examples_used"].mean()),
                   "versus": order, "versus_samples": float(reference["n_train_examples_used"].mean()),
                   "seeds": len(set(mine.index) & set(theirs.index))}
            for metric in PAIRED_METRICS:
                diffs = seed_deltas(mine, theirs, metric)
                low, high = interval_over_seeds(diffs)
                row.update({f"{metric}_delta": float(diffs.mean()), f"{metric}_low": low, f"{metric}_high": high})
            rows.append(row)
    return pd.DataFrame(rows).sort_values(["method", "samples", "versus"], ignore_index=True)


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


def match_sentence(method: str, curve: pd.DataFrame, reference: pd.Series, reference_f: int) -> str:
    """How many of BehaviorLM's samples `method` needs to reach its tail accuracy at F = reference_f, in words that
    do not claim more than the curve shows: a curve already above the target at its smallest size gives only an
    upper bound, and one that never reaches it gives none."""
    target, own = reference["test/acc_tail"], reference["n_samples"]
    what = (f"BehaviorLM's tail accuracy {target:.3f} (F={reference_f}, {own:,.0f} samples, "
            f"mean of {reference['n_seeds']:.0f} seed{'s' if reference['n_seeds'] != 1 else ''})")
    needed = samples_to_match(curve, target, "test/acc_tail")
    if needed is None:
        return f"{method} does not reach {what} at any size tried (up to {curve['n_samples'].max():,.0f} samples)"
    if curve["test/acc_tail"].iloc[0] >= target:
        return (f"{method} reaches {what} already at its smallest size, {needed:,.0f} samples: at most "
                f"{needed / own:.1f}x BehaviorLM's samples")
    return (f"{method} needs about {needed / own:.1f}x BehaviorLM's samples ({needed:,.0f}, interpolated) to reach "
            f"{what}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reference-f", type=int, default=20)
    parser.add_argument("--behaviorlm", type=Path, default=None, metavar="SWEEP",
                        help="the few-shot sweep that holds BehaviorLM's half (results/ablation-few-shot)")
    parser.add_argument("--paired-with", type=Path, default=None, metavar="SWEEP",
                        help="also pair every sequence job with each stage order of this sweep by seed, on the same "
                             "test set (for example results/paper-main) -> paired_with.csv")
    args = parser.parse_args(argv)
    jobs = load(args.folder, args.behaviorlm)
    table = curves(jobs)
    atomic_write_text(args.folder / "curves.csv", table.to_csv(index=False))
    reference = table[(table["method"] == "behaviorlm") & (table["setting"] == args.reference_f)]
    lines = [table.to_string(index=False), "(_ci: Student-t 95% half-width over the seeds; NaN: one seed, or seeds "
             "that all gave the same accuracy)", ""]
    if len(reference):
        ref = reference.iloc[0]
        for method in sorted(set(table["method"]) - {"behaviorlm"}):
            curve = table[table["method"] == method]
            lines.append(match_sentence(method, curve, ref, args.reference_f))
    else:
        # Say so rather than print a table a reader could take for the comparison.
        lines.append(f"no ratio: BehaviorLM at F={args.reference_f} has no completed job under "
                     f"{args.behaviorlm or args.folder / 'behaviorlm'}/runs (run `make ablation-few-shot`)")
    if args.paired_with is not None:
        paired = paired_with(jobs[jobs["method"] != "behaviorlm"], args.paired_with)
        atomic_write_text(args.folder / "paired_with.csv", paired.to_csv(index=False))
        lines += ["", f"sequence - {args.paired_with} by seed, mean [Student-t 95%] (paired_with.csv):"]
        for row in paired.to_dict("records"):
            cells = [f"{metric.split('_')[-1]} {row[f'{metric}_delta']:+.3f} "
                     + interval_words(row[f"{metric}_low"], row[f"{metric}_high"], row["seeds"], ONE_SEED)
                     for metric in PAIRED_METRICS]
            lines.append(f"{row['method']} k={row['k']} ({row['samples']:,.0f} samples) vs {row['versus']} "
                         f"({row['versus_samples']:,.0f}), {row['seeds']} seeds: " + ", ".join(cells))
    report = "\n".join(lines)
    atomic_write_text(args.folder / "report.txt", report + "\n")

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
    atomic_write(args.folder / "sample_efficiency.png", lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    print(report + f"\nwritten: {args.folder}/curves.csv, report.txt, sample_efficiency.png")


if __name__ == "__main__":
    main(sys.argv[1:])
