"""Did a change of defaults move a sweep's results beyond noise? The same jobs (stage order x seed) of two sweeps on
the same test samples, paired sample by sample.

    python -m experiments.defaults_shift results/paper-main results/paper-main-rerun \
        --old-compute cpu/bfloat16 --out results/paper-main-rerun/defaults_shift.md
    python -m experiments.defaults_shift results/avx2-fp32/paper-main-rerun results/paper-main-rerun \
        --same-defaults --out results/paper-main-rerun/precision_shift.md    # fp32 vs bf16, the same defaults

For every (stage_order, seed) completed in both sweeps and tested on the same samples (test/samples_digest): overall
accuracy reweighted to the test period's mix, anchor and tail accuracy in each, their difference (new - old), the
samples only the new run got right and only the old one did, and the sign-flip permutation test of the difference
(behaviorlm.stats; samples flipped, so the test asks whether the two runs' hits differ beyond what swapping them
per sample gives), Holm-adjusted over every job and metric. One seed per job tells whether a job's outcome moved;
the mean shift of a stage order over seeds, with its Student-t interval, whether a method's mean moved. Seeds of a
stage order whose predictions are identical in both sweeps (zero-shot: the untuned model does not depend on the
seed) are one computation, not replicates: they make one row ("0, 1"), one test, and no seed interval, which would
have zero width and call any shift beyond noise. The first
line of the output says in one line whether anything moved beyond noise (`verdict`), and whether the two sweeps may
also differ in precision (jobs that predate the compute record, or bf16 beside fp32), which the pairing cannot
separate from the defaults.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.collect import NOT_RECORDED, compute_summary, sample_weights
from behaviorlm.stats import interval_over_seeds, sign_flip_test
from behaviorlm.sweeps import completed_jobs
from behaviorlm.tables import markdown_table
from behaviorlm.utils import atomic_write_text

METRICS = ("acc_overall", "acc_anchor", "acc_tail")


def jobs_by_order_and_seed(sweep_dir: Path) -> dict[tuple[str, int], tuple[Path, dict]]:
    return {(metrics["stage_order"], int(metrics["seed"])): (folder, metrics)
            for folder, metrics in completed_jobs(sweep_dir).items()}


def predictions_digest(predictions: pd.DataFrame) -> str:
    return hashlib.sha256(predictions.to_csv().encode()).hexdigest()


def compare(old_dir: Path, new_dir: Path) -> pd.DataFrame:
    rows = []
    old_jobs, new_jobs = jobs_by_order_and_seed(old_dir), jobs_by_order_and_seed(new_dir)
    # (stage_order, old digest, new digest) -> (old, new, new metrics, the seeds that computed exactly that pair):
    # one row for them all
    computations: dict[tuple[str, str, str], tuple[pd.DataFrame, pd.DataFrame, dict, list[int]]] = {}
    for key in sorted(set(old_jobs) & set(new_jobs)):
        (old_folder, old_metrics), (new_folder, new_metrics) = old_jobs[key], new_jobs[key]
        if old_metrics["test/samples_digest"] != new_metrics["test/samples_digest"]:
            raise SystemExit(f"error: {key}: the two sweeps tested different samples (test/samples_digest "
                             f"{old_metrics['test/samples_digest']} vs {new_metrics['test/samples_digest']})")
        old, new = (pd.read_csv(folder / "test_predictions.csv").set_index("sample_id")
                    for folder in (old_folder, new_folder))
        computation = (key[0], predictions_digest(old), predictions_digest(new))
        computations.setdefault(computation, (old, new, new_metrics, []))[3].append(key[1])
    for computation, (old, new, new_metrics, seeds) in computations.items():
        both = old[["role", "correct"]].merge(new[["correct"]].add_suffix("_new"), left_index=True,
                                              right_index=True)
        for metric in METRICS:
            weights = sample_weights(both["role"], new_metrics.get("test/weight_anchor"), metric)
            chosen = weights > 0
            before, after = both["correct"].to_numpy(float), both["correct_new"].to_numpy(float)
            p, _ = sign_flip_test(after, before, weights)
            rows.append({"stage_order": computation[0], "seed": ", ".join(map(str, seeds)), "metric": metric,
                         "old": round(float(np.sum(weights * before)), 4),
                         "new": round(float(np.sum(weights * after)), 4),
                         "diff": round(float(np.sum(weights * (after - before))), 4),
                         "only new right": int(((after > before) & chosen).sum()),
                         "only old right": int(((after < before) & chosen).sum()), "p_permutation": p})
    if not rows:
        raise SystemExit(f"error: no (stage_order, seed) job completed in both {old_dir} and {new_dir}")
    table = pd.DataFrame(rows)
    from statsmodels.stats.multitest import multipletests

    table["p_holm"] = multipletests(table["p_permutation"], method="holm")[1]  # every job x metric at once
    # Two significant digits, after the adjustment: rounded to decimals first, a Monte-Carlo p of 1e-5 read as 0.
    for column in ("p_permutation", "p_holm"):
        table[column] = table[column].map(lambda p: float(f"{p:.2g}"))
    return table


def compute_of(sweep_dir: Path) -> str:
    """The device and precision of a sweep's matrix products ("cpu/float32"), in collect's own terms; "not
    recorded" for jobs that predate the record."""
    return compute_summary(pd.DataFrame(list(completed_jobs(sweep_dir).values())))


def compute_caveat(old: str, new: str, old_stated: str | None = None, same_defaults: bool = False) -> str:
    """Half a line when the two sweeps may not have run in the same precision: then a shift is the new defaults' and
    the machine's together (bf16 and fp32 round differently), and the comparison cannot tell them apart. old_stated:
    what the old jobs ran in where they predate the record, as the caller knows it from elsewhere (--old-compute);
    the line then says it was stated, not recorded. same_defaults: the caller says both sweeps ran the same defaults
    (--same-defaults), so the comparison is one of precision (or machine) alone."""
    if same_defaults:
        return (f" Same defaults in both (as stated with --same-defaults); the compute is old: {old}, new: {new}: a "
                "shift is the precision's and the machine's.")
    if old == NOT_RECORDED and old_stated:
        if old_stated == new:
            return (f" Compute: {new} in both (the old jobs predate the record: theirs is as stated with "
                    "--old-compute).")
        old = f"{old_stated} (stated, not recorded)"
    if old == new and NOT_RECORDED not in old:
        return ""
    return (f" The compute differs or is unknown (old: {old}; new: {new}): a shift is the new defaults' and the "
            "precision's together.")


def verdict(table: pd.DataFrame) -> str:
    """One line: did anything move beyond noise? A job x metric difference significant after Holm over all of them
    (noise of the test samples), or a stage order whose mean shift over seeds has a Student-t 95% interval that
    excludes 0 (noise of the seeds)."""
    moved = [f"{r.stage_order} seed{'s' if ',' in str(r.seed) else ''} {r.seed} {r.metric} {r.diff:+.3f} "
             f"(Holm p = {r.p_holm:.2g})"
             for r in table.itertuples() if r.p_holm < 0.05]
    shifts = []
    for (order, metric), group in table.groupby(["stage_order", "metric"]):
        # one computation, whatever its seeds, or equal differences (a discrete metric on few samples: tail +1
        # sample in each seed) have no interval (stats.interval_over_seeds); the sample-level tests above still
        # speak
        low, high = interval_over_seeds(group["diff"].to_numpy())
        if low > 0 or high < 0:
            shifts.append(f"{order} {metric} {group['diff'].mean():+.3f} [{low:+.3f}, {high:+.3f}] over "
                          f"{len(group)} seeds")
    seeds = table.groupby("stage_order")["seed"].nunique().max()  # distinct computations, not seed labels
    if not moved and not shifts:
        return (f"**Nothing moved beyond noise**: no job x metric difference is significant after Holm over the "
                f"{len(table)} tests, and no stage order's mean shift has a seed interval excluding 0"
                + (" (one seed per stage order: no seed interval yet)" if seeds < 2 else "") + ".")
    return "**Moved beyond noise**: " + "; ".join(moved + shifts) + "."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the sweep made with the old defaults")
    parser.add_argument("new", type=Path, help="the same sweep with the new ones")
    parser.add_argument("--out", type=Path, required=True, help="the markdown table to write")
    parser.add_argument("--old-compute", metavar="DEVICE/DTYPE", help="what the old sweep's jobs ran in, e.g. "
                        "cpu/bfloat16, where they predate the record and it is known from elsewhere (the output "
                        "says it was stated, not recorded)")
    parser.add_argument("--same-defaults", action="store_true", help="both sweeps ran the same defaults (and "
                        "code) on different machines: the comparison is of the precision, not of defaults")
    args = parser.parse_args(argv)
    table = compare(args.old, args.new)
    caveat = compute_caveat(compute_of(args.old), compute_of(args.new), args.old_compute, args.same_defaults)
    text = (f"Same jobs, same test samples: {args.new} against {args.old}, paired sample by sample "
            "(sign-flip permutation test of the difference, Holm-adjusted over every row; overall reweighted to the "
            "test period's mix).\n\n" + verdict(table) + caveat + "\n\n" + markdown_table(table) + "\n")
    atomic_write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
