"""The paper's claims against our measurements: one row per claim, each with a verdict computed from paired.csv.

    python -m experiments.claims                      # results/claims.md and results/claims.csv
    python -m experiments.claims --results results --out results

A claim compares a method with a reference on one test metric (tail accuracy of BehaviorLM vs plain fine-tuning,
say) and reads the sweep's `paired.csv` (experiments.collect --reference). The verdict asks two questions of the
measured difference: is it beyond chance on these test samples (exact McNemar test pooled over seeds, p < 0.05), and
does it survive seed-to-seed variation (Student-t 95% interval over seeds excludes 0; needs two seeds or more)?
- **holds**: both, in the paper's direction;
- **does not hold**: both, in the opposite direction;
- **inconclusive at this scale**: anything else. The row then says how many paired test predictions (samples x
  seeds) would resolve a difference of the paper's size, from the discordant pairs' variance:
  N' = N (1.96 se / d)^2 with se the standard error of the mean per-sample difference, or, when the seeds disagree,
  how many seeds would make the t-interval narrower than the paper's difference.
Claims whose sweep has not been run say so, with the command that would run it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pandas as pd
from scipy import stats

from behaviorlm.utils import atomic_write_text

ALPHA = 0.05


@dataclass(frozen=True)
class Claim:
    text: str           # the paper's claim, with its number
    target: str         # results/<target>/ and `make <target>`
    method: str         # the value of the swept key that the claim is about
    reference: str      # what it is compared with
    metric: str         # paired.csv metric: acc_overall | acc_anchor | acc_tail
    direction: int      # +1: the paper says method > reference; -1: method < reference
    relative_effect: Optional[float] = None  # the paper's relative effect, to size the experiment that decides


# The key each target sweeps (the Makefile's --key): every jobs.csv also has the other columns, constant.
SWEPT_KEY = {"paper-main": "stage_order", "ablation-components": "variant", "ablation-aux": "aux_ratio",
             "ablation-few-shot": "samples_per_behavior"}

CLAIMS = (
    Claim("BehaviorLM beats plain fine-tuning on tail behaviors (+27.4% tail accuracy)", "paper-main",
          "progressive", "joint", "acc_tail", +1, 0.274),
    Claim("BehaviorLM beats plain fine-tuning overall (+20.4% accuracy)", "paper-main",
          "progressive", "joint", "acc_overall", +1, 0.204),
    Claim("Tuning on anchors only keeps tail accuracy better than tuning on everything (0.39 vs 0.29)",
          "paper-main", "anchor_only", "joint", "acc_tail", +1, 0.39 / 0.29 - 1),
    Claim("Without the auxiliary conversation data accuracy drops (-4.71%)", "ablation-components",
          "no_aux", "full", "acc_overall", -1, 0.0471),
    Claim("Without contrastive (same-category) selection accuracy drops (-5.50%)", "ablation-components",
          "no_contrastive", "full", "acc_overall", -1, 0.0550),
    Claim("Without difficulty selection accuracy drops (-6.23%)", "ablation-components",
          "no_difficulty", "full", "acc_overall", -1, 0.0623),
    Claim("Mixing 5% auxiliary data beats none (0% vs 5%)", "ablation-aux", "0.0", "0.05", "acc_overall", -1),
    Claim("Mixing 5% auxiliary data beats 20%", "ablation-aux", "0.2", "0.05", "acc_overall", -1),
    Claim("F = 20 samples per behavior is enough: F = 50 is no better", "ablation-few-shot", "50", "20",
          "acc_overall", 0),
    Claim("100x sample efficiency over SASRec/BERT4Rec", "sample-efficiency", "", "", "", 0),
)


def reference_mean(jobs: pd.DataFrame, key: str, reference: str, metric: str) -> Optional[float]:
    rows = jobs[jobs[key].astype(str) == reference]
    column = f"test/{metric}"
    return float(rows[column].mean()) if len(rows) and column in rows else None


def decisive_n(row: pd.Series, n_samples: int, effect: float) -> Optional[int]:
    """Paired test predictions needed for a 95% interval of half-width `effect` (the paper's size, absolute)."""
    n = n_samples * int(row.n_seeds)
    b, c = float(row.n_only_method), float(row.n_only_reference)
    variance = (b + c) / n - ((b - c) / n) ** 2  # per-sample variance of (hit_method - hit_reference)
    if effect <= 0 or variance <= 0:
        return None
    return math.ceil(variance * (1.96 / effect) ** 2)


def seeds_to_resolve(row: pd.Series, effect: float, most: int = 100) -> Optional[int]:
    """Seeds for a Student-t 95% half-width below `effect`, at the seed-to-seed spread the interval shows."""
    n = int(row.n_seeds)
    spread = (row.ci_high - row.ci_low) / 2 * math.sqrt(n) / stats.t.ppf(0.975, n - 1)  # the per-seed sd
    return next((m for m in range(2, most + 1) if stats.t.ppf(0.975, m - 1) * spread / math.sqrt(m) < abs(effect)),
                None)


def verdict(claim: Claim, row: pd.Series, n_samples: int, ref_mean: Optional[float]) -> tuple[str, str]:
    """(verdict, why) for one claim from its paired.csv row."""
    diff, p = float(row.mean_diff), float(row.p_value)
    seed_interval = (not pd.isna(row.ci_low)) and int(row.n_seeds) >= 2
    excludes_zero = seed_interval and (row.ci_low > 0 or row.ci_high < 0)
    significant = p < ALPHA and excludes_zero
    sign = (diff > 0) - (diff < 0)
    if claim.direction == 0:  # "no better": holds unless the method is significantly better
        if significant and sign > 0:
            return "does not hold", "the larger setting is significantly better"
        if significant and sign < 0:
            return "holds", "the larger setting is significantly worse"
        return "holds (no significant difference)" if seed_interval else "inconclusive at this scale", \
            f"p = {p:.2g}" + ("" if seed_interval else ", one seed: no interval over seeds")
    if significant:
        return ("holds" if sign == claim.direction else "does not hold"), \
            f"p = {p:.2g}, the seed interval excludes 0"
    if p < ALPHA:
        reasons = [f"McNemar p = {p:.2g} on these samples, {'with' if sign == claim.direction else 'against'} the "
                   "paper"]
    else:
        reasons = [f"McNemar p = {p:.2g}"]
    if not seed_interval:
        reasons.append("one seed: no interval over seeds")
    elif not excludes_zero:
        reasons.append("the seed interval includes 0")
        if claim.relative_effect and ref_mean:
            seeds = seeds_to_resolve(row, claim.relative_effect * ref_mean)
            if seeds:
                reasons.append(f"about {seeds} seeds would narrow it below the paper's difference "
                               f"({claim.relative_effect * ref_mean:+.3f})")
    if p >= ALPHA and claim.relative_effect and ref_mean:
        needed = decisive_n(row, n_samples, claim.relative_effect * ref_mean)
        if needed:
            reasons.append(f"a difference of the paper's size ({claim.relative_effect * ref_mean:+.3f}) needs about "
                           f"{needed:,} paired test predictions (now {n_samples * int(row.n_seeds):,})")
    return "inconclusive at this scale", "; ".join(reasons)


def claims_table(results: Path) -> pd.DataFrame:
    rows = []
    for claim in CLAIMS:
        base = {"claim": claim.text, "command": f"make {claim.target} EXPERIMENT=nyc_cpu"}
        paired_csv, jobs_csv = results / claim.target / "paired.csv", results / claim.target / "jobs.csv"
        if not claim.metric or not paired_csv.exists():
            rows.append({**base, "verdict": "not run yet", "why": f"no {paired_csv}"})
            continue
        paired = pd.read_csv(paired_csv, dtype={"method": str, "reference": str})
        match = paired[(paired.method == claim.method) & (paired.reference == claim.reference)
                       & (paired.metric == claim.metric)]
        if match.empty:
            rows.append({**base, "verdict": "not run yet",
                         "why": f"{paired_csv} has no {claim.method} vs {claim.reference} on {claim.metric}"})
            continue
        row = match.iloc[0]
        jobs = pd.read_csv(jobs_csv)
        key = SWEPT_KEY[claim.target]
        n_samples = int(jobs["test/n_samples"].iloc[0])
        ref_mean = reference_mean(jobs, key, claim.reference, claim.metric)
        decision, why = verdict(claim, row, n_samples, ref_mean)
        interval = "" if pd.isna(row.ci_low) else f" [{row.ci_low:+.3f}, {row.ci_high:+.3f}]"
        rows.append({**base, "measured": f"{row.mean_diff:+.3f}{interval}", "p_value": f"{row.p_value:.2g}",
                     "seeds": str(int(row.n_seeds)), "reference_mean": ref_mean, "verdict": decision, "why": why})
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    lines = ["| claim (paper) | measured Δ [95% t over seeds] | McNemar p | seeds | verdict | why | command |",
             "|---|---|---|---|---|---|---|"]
    for row in table.astype(object).fillna("").itertuples():
        lines.append(f"| {row.claim} | {getattr(row, 'measured', '')} | {getattr(row, 'p_value', '')} | "
                     f"{getattr(row, 'seeds', '')} | **{row.verdict}** | {row.why} | `{row.command}` |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for claims.md and claims.csv (default: --results)")
    args = parser.parse_args()
    out = args.out or args.results
    table = claims_table(args.results)
    table.to_csv(out / "claims.csv", index=False)
    atomic_write_text(out / "claims.md", to_markdown(table))
    print(to_markdown(table))


if __name__ == "__main__":
    main()
