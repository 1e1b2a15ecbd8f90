"""How a sweep's summary is shown: the metrics tabulated and their labels, the markdown table with its legend, the
paired differences' cells and interval words, and the accuracy plot. behaviorlm.collect computes what these show;
experiments/ (claims, the trade-off and sample-efficiency reports) print their own tables with the same words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.metrics import acc_at_k_key

METRICS = ["test/acc_overall", "test/acc_anchor", "test/acc_tail", "test/macro_f1"]  # + acc@k, k = scoring.top_k
LABELS = {"test/acc_overall": "overall", "test/acc_anchor": "anchor", "test/acc_tail": "tail",
          "test/macro_f1": "macro-F1"}


def label(metric: str) -> str:
    return LABELS.get(metric) or metric.removeprefix("test/").replace("acc_at_", "acc@")


def table_metrics(columns) -> list[str]:
    """The metrics tabulated: the four above and acc@k for the k the jobs used (scoring.top_k)."""
    at_k = acc_at_k_key(columns)
    return METRICS + ([at_k] if at_k else [])


def markdown_table(frame: pd.DataFrame) -> str:
    """A plain markdown table of a frame (None/NaN as empty cells)."""
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def interval_words(low: float, high: float, n_seeds: int, one_seed: str = "") -> str:
    """A seed interval as printed beside its mean difference: '[low, high]'; '(seeds equal: no interval)' when
    stats.interval_over_seeds gave none to seeds that all had the same difference; `one_seed` for a single seed."""
    if pd.notna(low):
        return f"[{low:+.3f}, {high:+.3f}]"
    return "(seeds equal: no interval)" if int(n_seeds) >= 2 else one_seed


def interval_text(row) -> str:
    """A paired.csv row's interval as the tables print it after the mean: with a leading space, '' for one seed."""
    words = interval_words(row["ci_low"], row["ci_high"], row["n_seeds"])
    return f" {words}" if words else ""


def _delta_cell(pairs: pd.DataFrame, value, metric: str) -> str:
    row = pairs[(pairs["method"] == value) & (pairs["metric"] == metric)]
    if row.empty:
        return "ref."
    row = row.iloc[0]
    return f"{row['mean_diff']:+.3f}{interval_text(row)} p={row['p_permutation']:.2g}"


def to_markdown(table: pd.DataFrame, key: str, pairs: pd.DataFrame | None = None) -> str:
    """Mean ± half-width of the Student-t 95% interval over seeds (the value alone for one seed); with a
    reference, the paired difference in overall and tail accuracy [t-interval] and the permutation test's p."""
    deltas = [] if pairs is None else ["Δ overall", "Δ tail"]
    names = [label(m) for m in METRICS] + [c.removesuffix("_mean") for c in table.columns
                                            if c.startswith("acc@") and c.endswith("_mean")]
    # which mix each column averages: overall and acc@k are reweighted to the test period's anchor/tail mix, the
    # F1 scores are computed on the sample as drawn (a stratified test set's 50/50)
    shown = {"overall": "overall (reweighted)", "macro-F1": "macro-F1 (sample mix)"}
    header = [key, "seeds"] + [shown.get(n, f"{n} (reweighted)" if n.startswith("acc@") else n) for n in names] + \
        deltas + ["paper"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row[key]), str(row["n_seeds"])]
        for name in names:
            if f"{name}_mean" in row and pd.notna(row[f"{name}_mean"]):
                half = (row[f"{name}_ci_high"] - row[f"{name}_ci_low"]) / 2
                # one seed, or seeds that all gave the same value (zero-shot: one computation), has no interval:
                # the value alone rather than a misleading "± 0", which would read as no uncertainty at all
                cells.append(f"{row[f'{name}_mean']:.3f} ± {half:.3f}" if pd.notna(half) and half > 1e-12
                             else f"{row[f'{name}_mean']:.3f}")
            else:
                cells.append("n/a")
        if pairs is not None:
            cells += [_delta_cell(pairs, row[key], "acc_overall"), _delta_cell(pairs, row[key], "acc_tail")]
        cells.append(row["paper"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def legend(with_deltas: bool) -> str:
    """What the table's cells mean, under it: a reader of table.md alone cannot tell a half-width from a standard
    error, or why one cell has none."""
    text = ("± is the Student-t 95% half-width over the seeds; a value alone had one seed, or seeds that all gave "
            "that value (no spread to estimate seed noise from).")
    if with_deltas:
        text += (" Δ: the mean of the per-seed paired differences to the reference row [Student-t 95% over seeds]; "
                 "p: sample-level sign-flip permutation test of that difference (paired.csv has the rest).")
    return text


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
        err = np.nan_to_num(np.vstack([mean - table[f"{name}_ci_low"], table[f"{name}_ci_high"] - mean]))
        if numeric:
            ax.errorbar(table[key], mean, yerr=err, marker="o", capsize=3, label=name)
        else:
            ax.bar(positions + (offset - 1) * 0.27, mean, width=0.27, yerr=err, capsize=3, label=name)
    if numeric:
        ax.set_xlabel(key)
        if table[key].min() > 0 and table[key].max() / table[key].min() >= 10:
            ax.set_xscale("log")
        # the swept values themselves as ticks (a log axis would print 6x10^0, 2x10^1)
        ax.set_xticks(table[key].to_numpy(dtype=float), [f"{v:g}" for v in table[key]])
        ax.minorticks_off()
    else:
        ax.set_xticks(positions, table[key].astype(str), rotation=20)
    ax.set_ylabel("test accuracy (mean, Student-t 95% CI over seeds)")
    ax.set_title(f"accuracy vs {key}")
    ax.legend()
    fig.tight_layout()
    path = out / f"accuracy_vs_{key}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
