"""The statistics behind a sweep's tables (behaviorlm.collect) and the claims table (experiments/verdicts.py).

Seeds give Student-t intervals of a mean; the test samples, shared by every job of a sweep, give the paired
sample-level tests: a sign-flip permutation test with samples as clusters across seeds, its clustered standard
error, and each seed's exact McNemar test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (n - 1 degrees of freedom); NaN bounds for fewer than two values."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def interval_over_seeds(values: np.ndarray) -> tuple[float, float]:
    """t_interval of per-seed values (paired differences, or one method's accuracies), NaN bounds for one seed
    and when every seed gave the same value: accuracies are counts over a few hundred samples, so seeds tie often
    (a tail of 0 in every seed, +1 sample in each), and t's zero-width interval would read as certainty where
    there is no spread to estimate seed noise from."""
    values = np.asarray(values, dtype=float)
    # equal up to rounding: 6/300 - 5/300 and 5/300 - 4/300 differ by 2e-18
    if len(values) >= 2 and np.ptp(values) <= 1e-12:
        return float("nan"), float("nan")
    return t_interval(values)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts (b: only the method right, c: only the
    reference right): a binomial test of b successes in b + c trials at 1/2; 1.0 without discordant pairs."""
    if b + c == 0:
        return 1.0
    return float(stats.binomtest(int(b), int(b + c), 0.5).pvalue)

N_RESAMPLES = 50_000  # sign flips per permutation test: Monte-Carlo error of p under 0.0023 (at p = 0.5)
PERMUTATION_SEED = 0

def sign_flip_test(method: np.ndarray, reference: np.ndarray, coefficients: np.ndarray,
                   n_resamples: int = N_RESAMPLES, seed: int = PERMUTATION_SEED) -> tuple[float, float]:
    """Two-sided paired permutation test of T = sum_i c_i (method_i - reference_i), flipping each sample's
    method/reference labels (scipy.stats.permutation_test, permutation_type="samples"). `method` and
    `reference` are per-sample scores averaged over seeds, so a flip acts on a sample in every seed at once: the
    samples are the clusters, the seeds repeated measures of them. Returns (p, its Monte-Carlo standard error;
    0 when scipy enumerated every flip exactly)."""
    def statistic(x, y, axis):
        return np.sum(coefficients * (x - y), axis=axis)

    informative = (method != reference) & (coefficients != 0)  # an unchanged sample adds nothing to any flip
    if informative.sum() < 2:  # no flip, or one sample's two signs: |T| is the same either way
        return 1.0, 0.0
    method, reference, coefficients = method[informative], reference[informative], coefficients[informative]
    result = stats.permutation_test((method, reference), statistic, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, alternative="two-sided", batch=5_000,
                                    rng=np.random.default_rng(seed))
    exact = 2 ** len(method) <= n_resamples
    p = float(result.pvalue)
    return p, 0.0 if exact else float(np.sqrt(p * (1 - p) / n_resamples))

def clustered_se(differences: np.ndarray, roles: pd.Series, coefficients: np.ndarray) -> float:
    """Standard error of T = sum_i c_i D_i over the test samples (D_i: a sample's difference averaged over seeds),
    from the within-stratum variance of D: the sampling error that equivalence tests (TOST) need."""
    anchor = (roles == "anchor").to_numpy()
    variance = 0.0
    for members in (anchor, ~anchor):
        if members.sum() > 1:
            weight = coefficients[members].sum()  # the stratum's share of T
            variance += weight ** 2 * differences[members].var(ddof=1) / members.sum()
    return float(np.sqrt(variance))
