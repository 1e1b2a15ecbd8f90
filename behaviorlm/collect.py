"""Collect a sweep's metrics.json files into paper-style tables and plots, with honest statistics over seeds.

    behaviorlm collect multirun/behaviorlm/2026-12-03_10-00-00        # a `run.py -m` folder: the swept key inferred
    behaviorlm collect results/paper-main --reference joint --wandb   # a make target's folder (results/X/runs/N/)
    python -m experiments.collect results/ablation-few-shot --key samples_per_behavior   # the same, from a checkout

Reads each job's metrics.json (and test_predictions.csv) in either layout (behaviorlm.sweeps) and writes, in <dir>:
  jobs.csv     one row per sweep job (its settings and test metrics)
  table.csv    one row per value of --key: n seeds, mean, standard deviation and Student-t 95% interval (n - 1
               degrees of freedom) of each metric over seeds, the paper's figure if stated
  paired.csv   with --reference: per value, per metric (acc_overall and acc@5 reweighted to the test period's mix,
               acc_anchor, acc_tail; column `mix`), the mean paired difference to the reference over seeds with
               its t-interval, the sample-level sign-flip permutation test of that same difference with samples
               as clusters across seeds (p_permutation, p_permutation_mc_error, se_sample_level), and each seed's
               exact McNemar test on the metric's samples, unweighted (p_mcnemar_seed<N>, for reference)
  table.md     the table as markdown, with the difference to the reference, its interval and p (also printed)
  *.png        anchor / tail / overall accuracy against the key
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.metrics import acc_at_k_key
from behaviorlm.stats import clustered_se, interval_over_seeds, mcnemar_exact, sign_flip_test, t_interval
from behaviorlm.sweeps import job_dirs, jobs_root, load_sweep
from behaviorlm.tables import label, legend, plot, table_metrics, to_markdown
from behaviorlm.utils import atomic_write_text

# What ../shared/paper/BehaviorLM-summary.md states for each ablation (Llama-8B on the paper's datasets).
PAPER = {
    "aux_ratio": {0.0: "worse than 5% (Table 6)", 0.05: "best (Table 6)", 0.2: "worse than 5% (Table 6)"},
    "variant": {"full": "reference", "no_aux": "-4.71% overall", "no_contrastive": "-5.50% overall",
                "no_difficulty": "-6.23% overall"},
    "samples_per_behavior": {20: "about 20 is enough (Fig. 3b)"},
    "stage_order": {"anchor_only": "0.39 zero-shot tail acc.", "joint": "0.29 (tail, zero-shot comparison)",
                    "progressive": "up to +27.4% tail acc. over joint"},
}


def load_jobs(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """The sweep's jobs and swept keys (sweeps.load_sweep), or one line saying there is no job."""
    jobs, keys = load_sweep(sweep_dir)
    if jobs.empty:
        raise SystemExit(f"error: no job folder with a metrics.json in '{sweep_dir}' (looked for {sweep_dir}/runs/<N>/,"
                         f" as make leaves it, and {sweep_dir}/<N>/, as `run.py -m` does): did the sweep run?")
    return jobs, keys


COMPUTE = "compute"  # device/dtype of a job's matrix products (metrics.json device_type, compute_dtype)


def add_compute(jobs: pd.DataFrame) -> pd.DataFrame:
    """A `compute` column ("cpu/bfloat16"), empty for jobs that predate the record."""
    if {"device_type", "compute_dtype"} <= set(jobs.columns):
        known = jobs["device_type"].notna() & jobs["compute_dtype"].notna()
        jobs[COMPUTE] = (jobs["device_type"].astype(str) + "/" + jobs["compute_dtype"].astype(str)).where(known)
    return jobs


NOT_RECORDED = "not recorded"


def compute_labels(jobs: pd.DataFrame) -> pd.Series:
    """Each job's compute ("cpu/bfloat16"), NOT_RECORDED for jobs that predate the record."""
    jobs = add_compute(jobs.copy())
    return jobs[COMPUTE].fillna(NOT_RECORDED) if COMPUTE in jobs else pd.Series(NOT_RECORDED, index=jobs.index)


def compute_summary(jobs: pd.DataFrame) -> str:
    """The computes the jobs ran in, one line ("cpu/bfloat16, cpu/float32"); NOT_RECORDED for no job."""
    return ", ".join(sorted(set(compute_labels(jobs)))) or NOT_RECORDED


def compute_note(jobs: pd.DataFrame) -> str | None:
    """One line when the jobs of a sweep ran in different precisions (a bf16 machine and an fp32 one, say), or some
    record none: their differences are the machines' as well as the swept key's."""
    if COMPUTE not in jobs or jobs[COMPUTE].nunique() < 2 and jobs[COMPUTE].notna().all():
        return None
    kinds = compute_labels(jobs)
    parts = [f"{kind} (seeds {', '.join(str(s) for s in sorted(set(jobs.loc[kinds == kind, 'seed'])))})"
             for kind in sorted(set(kinds))]
    return (f"**Mixed compute**: the jobs ran as {'; '.join(parts)}: a difference across these is the machine's as "
            "well as the swept key's (paired seeds must match)")


def summarise(jobs: pd.DataFrame, key: str) -> pd.DataFrame:
    if key not in jobs.columns:
        raise SystemExit(f"error: --key {key!r} is not a metrics.json field; fields include "
                         f"{sorted(jobs.columns)[:12]}")
    rows = []
    for value, group in jobs.groupby(key, sort=True):
        row = {key: value, "n_seeds": len(group)}
        for metric in table_metrics(jobs.columns):
            values = group[metric].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            low, high = t_interval(values)
            row[f"{label(metric)}_mean"] = values.mean()
            row[f"{label(metric)}_std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            row[f"{label(metric)}_ci_low"] = low
            row[f"{label(metric)}_ci_high"] = high
        row["paper"] = PAPER.get(key, {}).get(value, "")
        rows.append(row)
    return pd.DataFrame(rows)


# metric -> (test samples it averages over, whether it is reweighted to the test period's anchor/tail mix)
PAIRED_METRICS = {"acc_overall": (None, True), "acc_anchor": ("anchor", False), "acc_tail": ("tail", False)}


def _predictions(jobs_dir: Path, job: str) -> pd.DataFrame:
    path = jobs_dir / job / "test_predictions.csv"
    if not path.exists():
        raise SystemExit(f"error: {path} is missing: paired tests need every job's per-sample predictions")
    frame = pd.read_csv(path).set_index("sample_id")
    if "top5" in frame:  # acc@5 per sample: the target among the five names ranked first
        frame["hit_at_5"] = [target in json.loads(top) for target, top in zip(frame["target"], frame["top5"])]
    return frame[[c for c in ("role", "correct", "hit_at_5") if c in frame]]


def sample_weights(roles: pd.Series, weight_anchor: float | None, metric: str) -> np.ndarray:
    """Each test sample's coefficient in the reported metric: 1/n over its stratum for anchor and tail accuracy,
    w_stratum/n_stratum for a metric reweighted to the test period's mix (overall, acc@5), 1/n without weights."""
    anchor = (roles == "anchor").to_numpy()
    stratum, reweighted = PAIRED_METRICS.get(metric, (None, True))
    if stratum == "anchor":
        return anchor / max(1, anchor.sum())
    if stratum == "tail":
        return ~anchor / max(1, (~anchor).sum())
    if not reweighted or weight_anchor is None:
        return np.full(len(roles), 1.0 / len(roles))
    return np.where(anchor, weight_anchor / max(1, anchor.sum()), (1 - weight_anchor) / max(1, (~anchor).sum()))


def coerce_reference(jobs: pd.DataFrame, key: str, reference: str):
    """The reference as the key column's type (`--reference 0.05` against a float column)."""
    matches = [v for v in jobs[key].unique() if str(v) == reference or
               (pd.api.types.is_number(v) and _is_float(reference) and float(v) == float(reference))]
    if not matches:
        raise SystemExit(f"error: --reference {reference!r} is not a value of {key!r}; values: "
                         f"{sorted(map(str, jobs[key].unique()))}")
    return matches[0]


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def paired(jobs: pd.DataFrame, key: str, reference, jobs_dir: Path) -> pd.DataFrame:
    """Each value of `key` against `reference` on the same test samples, paired by seed, per metric as reported:
    the mean of the per-seed differences with its Student-t interval over seeds; the sample-level sign-flip
    permutation test of that same difference (reweighted for overall accuracy and acc@5) with samples as
    clusters across seeds (`p_permutation`, its Monte-Carlo error) and its clustered standard error; and, for
    reference, the exact McNemar test of each seed alone on the metric's samples, unweighted."""
    for value, group in jobs.groupby(key):
        if group["seed"].duplicated().any():
            raise SystemExit(f"error: {key}={value} has several jobs per seed; pairing by seed needs one")
    ref_jobs = jobs[jobs[key] == reference].set_index("seed")
    at_k = acc_at_k_key(jobs.columns)
    metrics = dict(PAIRED_METRICS, **({"acc_at_5": (None, True)} if at_k == "test/acc_at_5" else {}))
    rows = []
    for value, group in jobs[jobs[key] != reference].groupby(key, sort=True):
        group = group.set_index("seed")
        seeds = sorted(set(group.index) & set(ref_jobs.index))
        if "test/samples_digest" in jobs:
            digest = "test/samples_digest"
            different = [s for s in seeds if group.loc[s, digest] != ref_jobs.loc[s, digest]]
            if different:
                raise SystemExit(f"error: {key}={value} and the reference {reference} were scored on different test "
                                 f"samples (test/samples_digest differs for seeds {different}); pair identical sets")
        if COMPUTE in jobs:  # a pair computed in bf16 against one in fp32 measures the machines too
            different = [s for s in seeds if pd.notna(group.loc[s, COMPUTE]) and pd.notna(ref_jobs.loc[s, COMPUTE])
                         and group.loc[s, COMPUTE] != ref_jobs.loc[s, COMPUTE]]
            if different:
                raise SystemExit(f"error: {key}={value} and the reference {reference} ran in different precisions "
                                 f"for seeds {different} (column compute: {group.loc[different[0], COMPUTE]} against "
                                 f"{ref_jobs.loc[different[0], COMPUTE]}); rerun one of them on the other's "
                                 "machine kind")
        pairs = {s: _predictions(jobs_dir, group.loc[s, "job"]).join(
            _predictions(jobs_dir, ref_jobs.loc[s, "job"]).add_suffix("_ref"), how="inner") for s in seeds}
        weight_anchor = float(group["test/weight_anchor"].iloc[0]) if "test/weight_anchor" in group else None
        if pairs:  # each sample's scores averaged over seeds, once for every metric
            per_sample = pd.concat(pairs.values(), keys=pairs.keys(), names=["seed"]).groupby(level="sample_id",
                                                                                           sort=False)
            roles = per_sample["role"].first()
            scores = [c for c in next(iter(pairs.values())).columns if c != "role" and c != "role_ref"]
            means = per_sample[scores].mean().astype(float)
        for metric, (stratum, reweighted) in metrics.items():
            diffs = (group.loc[seeds, f"test/{metric}"].astype(float)
                     - ref_jobs.loc[seeds, f"test/{metric}"].astype(float)).dropna().to_numpy()
            low, high = interval_over_seeds(diffs)
            row = {"method": value, "reference": reference, "metric": metric, "n_seeds": len(diffs),
                   "mean_diff": float(diffs.mean()) if len(diffs) else float("nan"), "ci_low": low, "ci_high": high,
                   "mix": "reweighted" if reweighted and weight_anchor else (stratum or "sample")}
            score = "hit_at_5" if metric == "acc_at_5" else "correct"
            if pairs:
                difference = (means[score] - means[f"{score}_ref"]).to_numpy()
                coefficients = sample_weights(roles, weight_anchor, metric)
                p, mc_error = sign_flip_test(means[score].to_numpy(), means[f"{score}_ref"].to_numpy(), coefficients)
                row.update({"diff_sample_level": float(np.sum(coefficients * difference)),
                            "se_sample_level": clustered_se(difference, roles, coefficients),
                            "p_permutation": p, "p_permutation_mc_error": mc_error, "n_samples": len(difference)})
            for s, chosen in pairs.items():
                if stratum == "anchor":
                    chosen = chosen[chosen["role"] == "anchor"]
                elif stratum == "tail":
                    chosen = chosen[chosen["role"] != "anchor"]
                b = int((chosen[score].astype(bool) & ~chosen[f"{score}_ref"].astype(bool)).sum())
                c = int((~chosen[score].astype(bool) & chosen[f"{score}_ref"].astype(bool)).sum())
                row[f"p_mcnemar_seed{s}"] = mcnemar_exact(b, c)
            rows.append(row)
    return pd.DataFrame(rows)


def log_to_wandb(out: Path, key: str, table: pd.DataFrame, images: list[Path], group: str) -> None:
    """The sweep's summary run, in the project and group its jobs logged to (read from a job's Hydra config)."""
    import os

    import wandb

    from behaviorlm.tracking import logged_where, wandb_mode

    project, entity = os.environ.get("WANDB_PROJECT", "behaviorlm-results"), None
    jobs = job_dirs(out)
    if jobs:
        where = logged_where(jobs[0], group)
        project, entity, group = where["project"] or project, where["entity"], where["group"]
    with wandb.init(project=project, entity=entity, group=group, job_type="summary", name=f"{group} summary",
                    dir=str(out), mode=wandb_mode()) as run:
        run.log({f"{key}/table": wandb.Table(dataframe=table),
                 **{f"{key}/{p.stem}": wandb.Image(str(p)) for p in images}})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="behaviorlm collect", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder: `run.py -m`'s (D/<N>/) or a make target's "
                                                     "(D/runs/<N>/)")
    parser.add_argument("--key", help="the metrics.json field the sweep varies; several joined by commas "
                                      "(method,time_features); default: the overrides that differ between jobs")
    parser.add_argument("--reference", help="the key's value the others are compared with (paired.csv)")
    parser.add_argument("--wandb", action="store_true", help="also log the table and plots to the sweep's W&B group")
    args = parser.parse_args(argv)
    jobs, swept = load_jobs(args.sweep_dir)
    if not (args.key or swept):
        raise SystemExit(f"error: cannot tell what the sweep in '{args.sweep_dir}' varies (no override differs between "
                         "its jobs but the seed): name the metrics.json field with --key")
    key = args.key or ",".join(swept)
    if "," in key:  # one label per combination, e.g. "sasrec True"
        fields = key.split(",")
        missing = [f for f in fields if f not in jobs.columns]
        if missing:
            raise SystemExit(f"error: --key fields {missing} are not metrics.json fields")
        jobs[key] = jobs[fields].astype(str).agg(" ".join, axis=1)
    jobs = add_compute(jobs)
    atomic_write_text(args.sweep_dir / "jobs.csv", jobs.to_csv(index=False))
    completed = jobs[jobs["status"] == "completed"] if "status" in jobs else jobs
    if len(completed) < len(jobs):
        print(f"warning: {len(jobs) - len(completed)} failed jobs are left out of the table (see jobs.csv)")
    mixed = compute_note(completed)
    if mixed:
        print(f"warning: {mixed}")
    table = summarise(completed, key)
    atomic_write_text(args.sweep_dir / "table.csv", table.to_csv(index=False))
    pairs = None
    if args.reference is not None:
        pairs = paired(completed, key, coerce_reference(completed, key, args.reference), jobs_root(args.sweep_dir))
        atomic_write_text(args.sweep_dir / "paired.csv", pairs.to_csv(index=False))
    markdown = f"{to_markdown(table, key, pairs)}\n\n{legend(pairs is not None)}"
    if mixed:
        markdown = f"{mixed}\n\n{markdown}"
    atomic_write_text(args.sweep_dir / "table.md", markdown + "\n")
    images = plot(table, key, args.sweep_dir)
    if args.wandb:
        log_to_wandb(args.sweep_dir, key, table, images, group=args.sweep_dir.name)
    print(f"{args.sweep_dir.name}: {len(jobs)} jobs, swept {key}\n{markdown}\nwritten: {args.sweep_dir}/table.md, "
          f"table.csv, jobs.csv{', paired.csv' if pairs is not None else ''}, {', '.join(p.name for p in images)}")


if __name__ == "__main__":
    main(sys.argv[1:])
