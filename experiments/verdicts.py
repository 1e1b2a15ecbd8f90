"""A claim's verdict from its paired statistics (`experiments/claims.py` reads them from each sweep's paired.csv).

- **holds** / **does not hold**: Holm-adjusted p < 0.05, the seed interval excludes 0, and both point the same
  way (with the paper / against it); **inconclusive at this scale** otherwise, also when the two tests disagree
  in sign. The row then gives, at 80% power, the seeds and the test predictions a difference of the paper's size
  would need (the formulas are in `seeds_needed` and `samples_needed`).
- "No better" claims are **equivalence** claims: a declared margin, and two one-sided tests (TOST) on the seed
  level (statsmodels `ttost_paired`) and on the sample level (normal TOST with the clustered standard error):
  **equivalent within ±m** when both reject, **not equivalent** when the difference is significant and beyond
  the margin, **inconclusive** otherwise.
- The sample-efficiency claim ("100x") compares curves, not two values of one key: BehaviorLM's tail accuracy at
  F = 20 against each sequence model's at every training-set size, paired by seed (`efficiency_verdict`). **does
  not hold** when a sequence model beats it (seed interval above 0) with under 100x BehaviorLM's samples; **holds**
  when every sequence model stays below it (interval under 0) at every size up to 100x and the data reach 100x;
  **inconclusive at this scale** otherwise, with the largest ratio the training set allows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
POWER = 0.80


@dataclass(frozen=True)
class Claim:
    text: str           # the paper's claim, with its number
    target: str         # results/<target>/ and `make <target>`
    method: str         # the value of the swept key that the claim is about
    reference: str      # what it is compared with
    metric: str         # paired.csv metric: acc_overall | acc_anchor | acc_tail
    direction: int      # +1: the paper says method > reference; -1: method < reference; 0: equivalent
    relative_effect: Optional[float] = None  # the paper's relative effect, to size the experiment that decides
    margin: Optional[float] = None  # equivalence claims: |difference| below this counts as "no better"


def samples_needed(se: float, n_samples: int, effect: float) -> Optional[int]:
    """Test samples for a two-sided 5% test to detect `effect` with 80% power: n' = n (se (z_0.975 + z_0.80) /
    effect)^2, scaling the clustered standard error `se` measured on `n_samples` samples (seeds as now)."""
    if effect == 0 or not se or pd.isna(se):
        return None
    return math.ceil(n_samples * (se * (stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(POWER)) / abs(effect)) ** 2)


def seeds_needed(row: pd.Series, effect: float, most: int = 200) -> Optional[int]:
    """Seeds for a paired t-test (two-sided 5%) to detect `effect` with 80% power, by the noncentral t
    distribution at the seed-to-seed sd the interval shows. That sd is estimated from n - 1 degrees of freedom
    (2 with three seeds), so the answer is itself rough."""
    n = int(row.n_seeds)
    if n < 2 or effect == 0:
        return None
    sd = (row.ci_high - row.ci_low) / 2 * math.sqrt(n) / stats.t.ppf(0.975, n - 1)
    if not sd > 0:
        return None
    for m in range(2, most + 1):
        critical = stats.t.ppf(1 - ALPHA / 2, m - 1)
        if stats.nct.sf(critical, m - 1, abs(effect) / sd * math.sqrt(m)) >= POWER:
            return m
    return None


def equivalence(claim: Claim, row: pd.Series, mine: np.ndarray, ref: np.ndarray) -> tuple[str, str]:
    """TOST within ±claim.margin, on the seed level (statsmodels ttost_paired) and on the sample level (normal
    two one-sided tests on the reweighted difference with its clustered standard error: hand-written, as
    statsmodels' TOST helpers take raw observations, not a weighted, clustered estimate)."""
    from statsmodels.stats.weightstats import ttost_paired

    m, diff, se = claim.margin, float(row.diff_sample_level), float(row.se_sample_level)
    p_samples = max(stats.norm.sf((diff + m) / se), stats.norm.cdf((diff - m) / se)) if se > 0 else float("nan")
    if len(mine) >= 2:
        p_seeds = float(ttost_paired(mine, ref, -m, m)[0])
        on_seeds = f"p = {p_seeds:.2g} over {len(mine)} seeds"
    else:
        p_seeds, on_seeds = float("nan"), "one seed: no test over seeds"
    why = f"TOST within ±{m}: p = {p_samples:.2g} on the samples, {on_seeds}"
    if p_samples < ALPHA and p_seeds < ALPHA:
        return f"equivalent within ±{m}", why
    beyond = abs(diff) > m and float(row.p_adjusted) < ALPHA and (row.ci_low > m or row.ci_high < -m)
    if beyond:
        return f"not equivalent (beyond ±{m})", why + f"; the difference {diff:+.3f} is significant and beyond it"
    return "inconclusive at this scale", why


def verdict(claim: Claim, row: pd.Series, ref_mean: Optional[float], mine=None, ref=None) -> tuple[str, str]:
    """(verdict, why) for one claim from its paired.csv row, with `p_adjusted` (Holm over the family) added."""
    if claim.direction == 0:
        return equivalence(claim, row, mine, ref)
    diff, p = float(row.mean_diff), float(row.p_adjusted)
    seed_interval = (not pd.isna(row.ci_low)) and int(row.n_seeds) >= 2
    excludes_zero = seed_interval and (row.ci_low > 0 or row.ci_high < 0)
    sign = (diff > 0) - (diff < 0)
    sample_sign = int(np.sign(float(row.diff_sample_level)))
    if p < ALPHA and excludes_zero and sign == sample_sign:
        return ("holds" if sign == claim.direction else "does not hold"), \
            f"Holm p = {p:.2g}, the seed interval excludes 0"
    reasons = [f"Holm p = {p:.2g}" + ("" if p >= ALPHA else
                                      f", {'with' if sample_sign == claim.direction else 'against'} the paper")]
    if sample_sign != sign:
        reasons.append("the sample-level and seed-level differences point different ways")
    if not seed_interval:
        reasons.append("one seed: no interval over seeds" if int(row.n_seeds) < 2 else
                       f"the {int(row.n_seeds)} seeds gave the same difference: no spread to draw an interval from")
    elif not excludes_zero:
        reasons.append("the seed interval includes 0")
    if claim.relative_effect and ref_mean:
        # signed as the measured difference (method - reference): "accuracy drops 4.71%" is a negative difference
        effect = claim.direction * claim.relative_effect * ref_mean
        seeds = seeds_needed(row, effect) if seed_interval else None
        samples = samples_needed(float(row.se_sample_level), int(row.n_samples), effect)
        n_seeds, n_samples = int(row.n_seeds), int(row.n_samples)
        # more test samples are only named when they would help: with enough already, the seeds are what is short
        wants = [f"about {seeds} seeds (now {n_seeds})" if seeds else "",
                 f"about {samples:,} test samples (now {n_samples:,})" if samples and samples > n_samples else ""]
        if any(wants):
            reasons.append(f"detecting the paper's difference ({effect:+.3f}) with 80% power needs "
                           f"{' or '.join(w for w in wants if w)}")
        if samples and samples <= n_samples:
            reasons.append(f"the {n_samples:,} test samples already give the sample-level test 80% power for the "
                           f"paper's difference (it needs about {samples:,})")
        # what an undecided row can still say: no difference is shown, but one of the paper's size is ruled out (the
        # interval short of the paper's difference; an interval beyond it rules out a smaller one, which is not this)
        if seed_interval and (row.ci_high < effect if effect > 0 else row.ci_low > effect):
            reasons.append(f"the seed interval rules out a difference as large as the paper's ({effect:+.3f})")
    return "inconclusive at this scale", "; ".join(reasons)


EFFICIENCY_FACTOR = 100.0  # the paper's "about 100x more sample-efficient"
EFFICIENCY_F = 20  # BehaviorLM's F the ratio is measured at (the paper's F; `experiments.sample_efficiency` too)


def efficiency_verdict(folder: Path, behaviorlm: Optional[Path] = None) -> Optional[dict]:
    """The sample-efficiency row from `make sample-efficiency`'s jobs (None when it has not run): per sequence model
    and training-set size, the per-seed difference in tail accuracy to BehaviorLM at F = EFFICIENCY_F, with its
    Student-t 95% interval over seeds."""
    from behaviorlm.stats import interval_over_seeds
    from behaviorlm.tables import interval_words
    from experiments.sample_efficiency import ONE_SEED, load, seed_deltas, with_size_label

    try:
        jobs = load(folder, behaviorlm)
    except SystemExit:
        return None
    if jobs["test/samples_digest"].nunique() != 1:
        raise SystemExit(f"error: {folder}: the jobs were tested on {jobs['test/samples_digest'].nunique()} "
                         "different test sets (column test/samples_digest); their accuracies cannot be compared")
    ours = jobs[jobs["method"] == "behaviorlm"]
    ours = ours[ours["samples_per_behavior"] == EFFICIENCY_F] if len(ours) else ours
    if ours.empty:  # the sequence half alone answers nothing: say what is there and what is missing
        sequence = jobs[jobs["method"] != "behaviorlm"]
        return {"verdict": "not run yet", "why": f"{len(sequence)} sequence-model jobs over "
                f"{sequence['seed'].nunique()} seeds, but no completed BehaviorLM job with F={EFFICIENCY_F} "
                f"under {behaviorlm or folder}"}
    ours_by_seed = ours.set_index("seed")
    n_ours = float(ours["n_train_examples_used"].mean())
    sizes = []  # (method, k per behavior, samples, ratio, mean difference, low, high, seeds)
    for (method, k), group in with_size_label(jobs[jobs["method"] != "behaviorlm"]).groupby(["method", "k"]):
        diffs = seed_deltas(group.set_index("seed"), ours_by_seed, "test/acc_tail")
        n = float(group["n_train_examples_used"].mean())
        low, high = interval_over_seeds(diffs)
        sizes.append((method, k, n, n / n_ours, float(diffs.mean()), low, high, len(diffs)))
    table = pd.DataFrame(sizes, columns=["method", "k", "samples", "ratio", "delta", "low", "high", "seeds"])
    within = table[table["ratio"] <= EFFICIENCY_FACTOR]
    beaten = within[within["low"] > 0]
    largest = table.groupby("method")["ratio"].max()
    ours_mean = float(ours["test/acc_tail"].mean())

    def cell(row) -> str:
        return f"{row.method} k={row.k} ({row.samples:,.0f} samples, {row.ratio:.1f}x): Δ tail {row.delta:+.3f} " \
            + interval_words(row.low, row.high, row.seeds, ONE_SEED)

    base = {"measured": f"largest ratio here {largest.min():.1f}x", "mix": "tail",
            "seeds": str(int(table["seeds"].min())), "reference_mean": ours_mean}
    if len(beaten):
        row = beaten.sort_values("ratio").iloc[0]
        return {**base, "measured": f"{row.ratio:.1f}x", "verdict": "does not hold",
                "why": f"BehaviorLM (F={EFFICIENCY_F}, {n_ours:,.0f} samples) tail {ours_mean:.3f}; " + cell(row)
                + f": matched with under {EFFICIENCY_FACTOR:g}x the samples"}
    below = len(within) and (within["high"] < 0).all()
    if below and (largest >= EFFICIENCY_FACTOR).all():
        return {**base, "verdict": "holds", "why": f"every sequence model stays below BehaviorLM's tail accuracy "
                f"{ours_mean:.3f} up to {EFFICIENCY_FACTOR:g}x its {n_ours:,.0f} samples (seed intervals under 0)"}
    best = table.loc[table.groupby("method")["delta"].idxmax()]
    return {**base, "verdict": "inconclusive at this scale",
            "why": f"BehaviorLM (F={EFFICIENCY_F}, {n_ours:,.0f} samples) tail {ours_mean:.3f}; each sequence model "
            "at its best size: "
            + "; ".join(cell(row) for row in best.itertuples())
            + f"; the training set here allows at most {largest.min():.1f}x BehaviorLM's samples, so a "
            f"{EFFICIENCY_FACTOR:g}x gap cannot be measured" + ("" if below else
                                                                 " (and not every size is below it)")}
