"""The paper's claims against our measurements: one row per claim, each with a verdict computed from paired.csv.

    python -m experiments.claims                      # results/claims.md and results/claims.csv
    python -m experiments.claims --results results --out results --readme README.md --docs docs/results.md

A claim compares a method with a reference on one test metric (tail accuracy of BehaviorLM vs plain fine-tuning,
say) and reads the sweep's `paired.csv` (behaviorlm collect --reference). Two tests look at the same difference,
the one the table prints: the sample-level sign-flip permutation test (samples as clusters across seeds; the
difference reweighted to the test period's mix for overall accuracy), and the Student-t interval of the per-seed
differences (seed-to-seed variation; two seeds or more).
- **The family**: the claims of CLAIMS that have a paired test form one family; their sample-level p-values are
  adjusted together with Holm's step-down method (statsmodels `multipletests`), over the claims run so far.
- Two claims that compare **the same computations** (ablation-aux's 0 vs 0.05 are ablation-components' no_aux vs
  full, taken from the stage cache: their test predictions are identical seed by seed) are one test, not two
  confirmations: one member of the Holm family, and the later row says whose test it shares.
- The verdicts (holds, does not hold, equivalent, inconclusive at this scale) and their rules:
  `experiments/verdicts.py`.
Claims whose sweep has not been run say so, with the command that would run it.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from behaviorlm.collect import compute_summary
from behaviorlm.tables import interval_text
from behaviorlm.utils import atomic_write_text
from experiments.verdicts import EFFICIENCY_F, Claim, efficiency_verdict, verdict

# Where a target's committed sweep lies under results/ when not in results/<target>: the claims sweeps run in two
# series, bf16 (results/) and fp32 (results/avx2-fp32/, tools/sweeps/cpu_claims.sh), never pooled; a row reads one
# series, and its compute column says which.
SWEEP_FOLDER: dict[str, str] = {
    "paper-main": "avx2-fp32/paper-main-rerun",  # today's defaults, 3 seeds in fp32 (2026-12-05/07); the old runs
                                                 # of 2026-11-26 stay in results/paper-main, before four defaults
    "ablation-components": "avx2-fp32/ablation-components",  # seeds 0-1 in fp32 (2026-12-06/07): more than
                                                             # the bf16 series' one (results/ablation-components)
    "ablation-aux": "avx2-fp32/ablation-aux",  # its first seed ran in fp32 (2026-12-07)
    "ablation-few-shot": "avx2-fp32/ablation-few-shot",  # its first seed ran in fp32 (2026-12-07); the
                                                         # sample-efficiency row reads BehaviorLM's half here too
}


def sweep_folder(results: Path, target: str) -> Path:
    return results / SWEEP_FOLDER.get(target, target)


# The key each target sweeps (the Makefile's --key): every jobs.csv also has the other columns, constant.
SWEPT_KEY = {"paper-main": "stage_order", "ablation-components": "variant", "ablation-aux": "aux_ratio",
             "ablation-few-shot": "samples_per_behavior"}

# ±0.02 absolute accuracy: a tenth of the overall accuracy every tuned method reaches at nyc_cpu scale (0.21-0.23),
# and a third of the smallest component effect the paper reports (4.7% relative): F = 50 triples the B set, and a
# gain under 0.02 would not repay that.
F_MARGIN = 0.02

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
          "acc_overall", 0, margin=F_MARGIN),
    Claim("100x sample efficiency over SASRec/BERT4Rec", "sample-efficiency", "", "", "", 0),
)
FAMILY = tuple(claim for claim in CLAIMS if claim.metric)  # the claims tested together (Holm)


def reference_mean(jobs: pd.DataFrame, key: str, reference: str, metric: str) -> Optional[float]:
    rows = jobs[jobs[key].astype(str) == reference]
    column = f"test/{metric}"
    return float(rows[column].mean()) if len(rows) and column in rows else None


def seed_values(jobs: pd.DataFrame, key: str, claim: Claim) -> tuple[np.ndarray, np.ndarray]:
    """The method's and the reference's per-seed metric, paired by seed."""
    column = f"test/{claim.metric}"
    mine = jobs[jobs[key].astype(str) == claim.method].set_index("seed")[column]
    ref = jobs[jobs[key].astype(str) == claim.reference].set_index("seed")[column]
    seeds = sorted(set(mine.index) & set(ref.index))
    return mine.loc[seeds].to_numpy(dtype=float), ref.loc[seeds].to_numpy(dtype=float)


def computations_digest(results: Path, claim: Claim, jobs: pd.DataFrame) -> Optional[str]:
    """A digest of what the claim's test compares: its metric and, seed by seed, the test predictions of the
    method's and the reference's jobs (results/<target>/runs/<job>/test_predictions.csv, `jobs` its jobs.csv); None
    when a job's predictions are not there, which no other claim can share."""
    key = SWEPT_KEY[claim.target]
    if "job" not in jobs:
        return None
    digest = hashlib.sha256(claim.metric.encode())
    for role, value in (("method", claim.method), ("reference", claim.reference)):
        for job in jobs[jobs[key].astype(str) == value].sort_values("seed").itertuples():
            predictions = sweep_folder(results, claim.target) / "runs" / job.job / "test_predictions.csv"
            if not predictions.exists():
                return None
            digest.update(f"{role}|{job.seed}|".encode() + predictions.read_bytes())
    return digest.hexdigest()


# how a row that shares an earlier claim's test says so; to_markdown counts the family's tests by it
SHARED_TEST = "one test, counted once in the family"


def claims_table(results: Path) -> pd.DataFrame:
    from statsmodels.stats.multitest import multipletests

    rows, found, jobs_of = [], {}, {}
    for claim in CLAIMS:
        paired_csv = sweep_folder(results, claim.target) / "paired.csv"
        if not claim.metric or not paired_csv.exists():
            continue
        paired = pd.read_csv(paired_csv, dtype={"method": str, "reference": str})
        match = paired[(paired.method == claim.method) & (paired.reference == claim.reference)
                       & (paired.metric == claim.metric)]
        if not match.empty and "p_permutation" in match:
            found[claim] = match.iloc[0].copy()
            jobs_of[claim] = pd.read_csv(sweep_folder(results, claim.target) / "jobs.csv", dtype={"job": str})
    # a claim over the same computations as an earlier one shares its test: one member of the family, one p-value
    shares: dict[Claim, Claim] = {}  # the claims that share an earlier claim's test -> that claim
    first_of: dict[str, Claim] = {}
    for claim in found:
        digest = computations_digest(results, claim, jobs_of[claim])
        if digest is not None and first_of.setdefault(digest, claim) is not claim:
            shares[claim] = first_of[digest]
    tests = [claim for claim in found if claim not in shares]
    if tests:  # Holm over the family members that have run
        adjusted = multipletests([float(found[claim].p_permutation) for claim in tests], method="holm")[1]
        for claim, p in zip(tests, adjusted):
            found[claim]["p_adjusted"] = float(p)
        for claim, first in shares.items():
            found[claim]["p_adjusted"] = found[first]["p_adjusted"]
            found[claim]["p_permutation"] = found[first]["p_permutation"]
    for claim in CLAIMS:
        base = {"claim": claim.text, "command": f"make {claim.target} EXPERIMENT=nyc_cpu"}
        if not claim.metric:  # the sample-efficiency curves
            # BehaviorLM's half is the few-shot sweep's (make sample-efficiency runs it there)
            row = efficiency_verdict(results / claim.target, sweep_folder(results, "ablation-few-shot"))
            rows.append({**base, **(row or {"verdict": "not run yet", "why": f"no completed jobs with "
                                             f"F={EFFICIENCY_F} under {results / claim.target}"})})
            continue
        if claim not in found:
            rows.append({**base, "verdict": "not run yet",
                         "why": f"no {sweep_folder(results, claim.target) / 'paired.csv'}"})
            continue
        row, jobs = found[claim], jobs_of[claim]
        key = SWEPT_KEY[claim.target]
        ref_mean = reference_mean(jobs, key, claim.reference, claim.metric)
        decision, why = verdict(claim, row, ref_mean, *seed_values(jobs, key, claim))
        if claim in shares:
            why += (f"; the same computations as \"{shares[claim].text}\" (identical test predictions, seed by "
                    f"seed): {SHARED_TEST}")
        compared = jobs[jobs[key].astype(str).isin([claim.method, claim.reference])]
        rows.append({**base, "measured": f"{row.mean_diff:+.3f}{interval_text(row)}", "mix": row.get("mix", ""),
                     "p_permutation": f"{row.p_permutation:.2g}", "holm_p": f"{row.p_adjusted:.2g}",
                     "seeds": str(int(row.n_seeds)), "compute": compute_summary(compared),
                     "reference_mean": ref_mean, "verdict": decision, "why": why})
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    run = int((table["verdict"] != "not run yet").sum())
    tested = table["holm_p"].notna() & (table["holm_p"] != "") if "holm_p" in table \
        else pd.Series(False, index=table.index)
    shared = table["why"].fillna("").str.contains(SHARED_TEST, regex=False)
    lines = [f"Family: the {len(FAMILY)} claims with a paired test ({run} run so far; claims over the same "
             f"computations count once: {int((tested & ~shared).sum())} tests now), Holm-adjusted together; "
             "p: sample-level sign-flip permutation test of the difference shown (samples as clusters across seeds), "
             "Δ: mean of the per-seed differences [Student-t 95% over seeds], on the mix named; compute: the device "
             "and precision the compared jobs ran in (\"not recorded\" for jobs that predate the record).", "",
             "| claim (paper) | measured Δ [95% t over seeds] | mix | p | Holm p | seeds | compute | verdict | why | "
             "command |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in table.astype(object).fillna("").itertuples():
        lines.append(f"| {row.claim} | {getattr(row, 'measured', '')} | {getattr(row, 'mix', '')} | "
                     f"{getattr(row, 'p_permutation', '')} | {getattr(row, 'holm_p', '')} | "
                     f"{getattr(row, 'seeds', '')} | {getattr(row, 'compute', '')} | **{row.verdict}** | {row.why} | "
                     f"`{row.command}` |")
    return "\n".join(lines) + "\n"


# The README's short claims table and docs/results.md's full one lie between these lines, written by `make claims`
# (`--readme`, `--docs`) so that they cannot fall behind results/claims.md; tests/test_claims.py checks the committed
# files against the committed results.
TABLE_BEGIN = "<!-- claims table: written by `make claims` from results/claims.csv; do not edit by hand -->"
TABLE_END = "<!-- end of the claims table -->"
DECIDED = ("holds", "does not hold", "equivalent", "not equivalent")


def readme_table(table: pd.DataFrame) -> str:
    """The README's short form of the claims table: the difference with its mix, Holm p, seeds and verdict."""
    lines = ["| claim (paper) | measured Δ [95% t over seeds] | Holm p | seeds | verdict |", "|---|---|---|---|---|"]
    for row in table.astype(object).fillna("").itertuples():
        measured = getattr(row, "measured", "")
        mix = getattr(row, "mix", "")
        if measured and mix and mix != "reweighted":
            measured = f"{measured} {mix}"
        verdict = f"**{row.verdict}**" if row.verdict.startswith(DECIDED) else row.verdict
        lines.append(f"| {row.claim} | {measured} | {getattr(row, 'holm_p', '')} | {getattr(row, 'seeds', '')} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


def with_table(path: Path, content: str) -> str:
    """The file's text with `content` between its TABLE_BEGIN and TABLE_END lines (written by the caller)."""
    text = path.read_text()
    once = text.count(TABLE_BEGIN) == 1 and text.count(TABLE_END) == 1
    if not once or text.index(TABLE_BEGIN) > text.index(TABLE_END):
        raise SystemExit(f"error: {path}: no claims table to replace: it needs one line '{TABLE_BEGIN}' and, "
                         f"after it, one line '{TABLE_END}'")
    head, rest = text.split(TABLE_BEGIN + "\n", 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{content}{TABLE_END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for claims.md and claims.csv (default: --results)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also rewrite this README's short claims table (between its two claims-table lines)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also rewrite this page's full claims table (between its two claims-table lines)")
    args = parser.parse_args()
    out = args.out or args.results
    table = claims_table(args.results)
    out.mkdir(parents=True, exist_ok=True)
    # every page's new text first: a page without its table lines stops the run before anything is written
    markdown = to_markdown(table)
    writes = {out / "claims.csv": table.to_csv(index=False), out / "claims.md": markdown}
    if args.readme:
        writes[args.readme] = with_table(args.readme, readme_table(table))
    if args.docs:
        writes[args.docs] = with_table(args.docs, markdown)
    for path, text in writes.items():
        atomic_write_text(path, text)
    print(markdown)


if __name__ == "__main__":
    main()
