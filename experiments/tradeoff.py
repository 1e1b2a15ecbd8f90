"""The head/tail trade-off of post-hoc logit adjustment on tuned runs, without retraining.

    python -m experiments.tradeoff results/paper-main --taus 0 0.25 0.5 1 2 --out results/tradeoff-logit-adjustment

For every job of `--order` (default progressive) in the sweep: load its adapter (`behaviorlm predict`'s loader),
score its validation and test samples once with the job's own scoring mode, then rank them with
τ · (log p_train − log p_B) added for each τ, p_B being the B set the job recorded in selection.json
(`scoring.logit_adjustment.tau` does the same inside a run). The rebuilt test set must be the job's (same digest)
and τ = 0 must reproduce the job's test accuracy within one sample (bf16 scoring of a differently padded batch is
not bit-identical); the script stops otherwise. Writes `jobs.csv` (seed × τ), `table.md` (mean and Student-t 95%
interval over seeds of anchor, tail and overall accuracy per τ, paired against τ = 0 with exact McNemar tests pooled over seeds, the
sweep's other stage orders as reference points) and `anchor_vs_tail.png`. The operating point a user should take
is chosen on validation (`τ_val`, the τ with the best mean validation accuracy), never on the test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from behaviorlm.data.dataset import load_dataset
from behaviorlm.metrics import evaluate_rankings
from behaviorlm.predict import BehaviorPredictor
from behaviorlm.scoring import top_k_names
from behaviorlm.stages import logit_adjustment
from behaviorlm.utils import atomic_write_text, compose_config
from experiments.collect import markdown_table, mcnemar_exact, t_interval

METRICS = ("acc_anchor", "acc_tail", "acc_overall")


def job_config(job_dir: Path):
    overrides = [o for o in OmegaConf.load(job_dir / ".hydra" / "overrides.yaml") if not o.startswith("hydra.")]
    return compose_config([*overrides, "logger=none"])


def b_set_targets(job_dir: Path) -> list[str]:
    """The B set's behaviors, one entry per selected sample (selection.json counts them by tier)."""
    per_behavior = json.loads((job_dir / "selection.json").read_text())["per_behavior"]
    return [name for name, tiers in per_behavior.items() for _ in range(sum(tiers.values()))]


def study_job(job_dir: Path, taus: list[float], batch_size: int | None) -> tuple[list[dict], dict[float, np.ndarray]]:
    cfg = job_config(job_dir)
    recorded = json.loads((job_dir / "metrics.json").read_text())
    dataset = load_dataset(cfg)
    predictor = BehaviorPredictor.load(job_dir, batch_size=batch_size or cfg.scoring.batch_size)
    bm = predictor.bm
    bm.scoring_mode, bm.beam_width = cfg.scoring.mode, cfg.scoring.beam_width
    names, k = list(bm.vocab.names), cfg.scoring.top_k
    val_scores = bm.scores(dataset.val, progress="validation")
    test_scores = bm.scores(dataset.test, progress="test")
    targets = b_set_targets(job_dir)
    rows, hits = [], {}
    for tau in taus:
        offset = logit_adjustment(bm.vocab, targets, tau)
        val, _, _ = evaluate_rankings(dataset.val, top_k_names(val_scores + offset, names, k), bm.vocab, k)
        test, _, predictions = evaluate_rankings(dataset.test, top_k_names(test_scores + offset, names, k),
                                                 bm.vocab, k, dataset.test_weights)
        if test["samples_digest"] != recorded["test/samples_digest"]:
            raise SystemExit(f"error: {job_dir}: the test set rebuilt here (digest {test['samples_digest']}) is not "
                             f"the one the job was tested on ({recorded['test/samples_digest']})")
        # bf16 scoring of a padded batch is not bit-identical to the job's: allow one sample's worth of drift
        plain = "acc_overall_sample" if "acc_overall_sample" in test else "acc_overall"  # unweighted share of hits
        drift = abs(test[plain] - recorded[f"test/{plain}"])
        if tau == 0 and drift > 1.01 / len(dataset.test):
            raise SystemExit(f"error: {job_dir}: tau = 0 gives test accuracy {test[plain]:.4f}, the job recorded "
                             f"{recorded[f'test/{plain}']:.4f}: this study does not reproduce the run (try "
                             "--batch-size 1)")
        rows.append({"seed": cfg.seed, "tau": tau, "val_acc_overall": val["acc_overall"],
                     "recorded_test_acc_overall": recorded["test/acc_overall"],
                     **{f"test/{m}": test[m] for m in METRICS}, "test/samples_digest": test["samples_digest"]})
        hits[tau] = predictions["correct"].to_numpy()
    return rows, hits


def summarize(jobs: pd.DataFrame, hits: dict[int, dict[float, np.ndarray]], others: pd.DataFrame) -> str:
    lines = []
    reference = {seed: h[0.0] for seed, h in hits.items()}
    for tau, group in jobs.groupby("tau"):
        row = {"τ": tau, "seeds": len(group)}
        for metric in METRICS:
            values = group[f"test/{metric}"].to_numpy()
            low, high = t_interval(values)
            row[metric.replace("acc_", "")] = f"{values.mean():.3f} [{low:.3f}, {high:.3f}]"
        row["val overall"] = f"{group['val_acc_overall'].mean():.3f}"
        if tau != 0.0:
            b = sum(int(((h[tau] == 1) & (reference[s] == 0)).sum()) for s, h in hits.items())
            c = sum(int(((h[tau] == 0) & (reference[s] == 1)).sum()) for s, h in hits.items())
            row["vs τ=0 (McNemar, overall hits)"] = f"+{b} / −{c}, p = {mcnemar_exact(b, c):.2g}"
        else:
            row["vs τ=0 (McNemar, overall hits)"] = "ref."
        lines.append(row)
    best = jobs.groupby("tau")["val_acc_overall"].mean().idxmax()
    text = markdown_table(pd.DataFrame(lines)) + f"\n\nτ_val (best mean validation accuracy): {best}\n"
    if len(others):
        points = []
        for order, group in others.groupby("stage_order"):
            cells = [f"{group[f'test/{m}'].mean():.3f}" for m in METRICS]
            points.append({"stage_order": order, "seeds": len(group), "anchor": cells[0], "tail": cells[1],
                           "overall": cells[2]})
        text += "\nThe sweep's other stage orders (means over seeds), as reference points:\n\n"
        text += markdown_table(pd.DataFrame(points)) + "\n"
    return text


def plot(jobs: pd.DataFrame, others: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = jobs.groupby("tau")[["test/acc_anchor", "test/acc_tail"]].mean()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.plot(means["test/acc_tail"], means["test/acc_anchor"], "o-", label="progressive + logit adjustment")
    for tau, row in means.iterrows():
        ax.annotate(f"τ={tau:g}", (row["test/acc_tail"], row["test/acc_anchor"]), fontsize=8,
                    textcoords="offset points", xytext=(4, 4))
    for order, group in others.groupby("stage_order"):
        ax.plot(group["test/acc_tail"].mean(), group["test/acc_anchor"].mean(), "s", label=order)
    ax.set_xlabel("tail accuracy (test)")
    ax.set_ylabel("anchor accuracy (test)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--order", default="progressive", help="the stage order whose jobs are re-ranked")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 2.0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="scoring batch (default: the job's scoring.batch_size; 1 for runs made before beam "
                             "batching)")
    args = parser.parse_args()
    taus = sorted(set([0.0, *args.taus]))
    rows, hits, others = [], {}, []
    for metrics_path in sorted(args.sweep_dir.glob("runs/*/metrics.json")):
        metrics = json.loads(metrics_path.read_text())
        if metrics.get("status") != "completed":
            continue
        if metrics["stage_order"] != args.order:
            others.append({k: metrics.get(k) for k in ("stage_order", "seed", *(f"test/{m}" for m in METRICS))})
            continue
        job_rows, job_hits = study_job(metrics_path.parent, taus, args.batch_size)
        rows += job_rows
        hits[metrics["seed"]] = job_hits
    if not rows:
        raise SystemExit(f"error: no completed {args.order} job under {args.sweep_dir}/runs")
    jobs = pd.DataFrame(rows)
    if jobs["test/samples_digest"].nunique() != 1:
        raise SystemExit("error: the jobs were tested on different samples; they cannot be paired")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "jobs.csv", jobs.to_csv(index=False))
    others_frame = pd.DataFrame(others)
    table = summarize(jobs, hits, others_frame)
    atomic_write_text(args.out / "table.md", table)
    plot(jobs, others_frame, args.out / "anchor_vs_tail.png")
    print(table)


if __name__ == "__main__":
    main()
