"""What the trade-off study's rows say (`experiments.tradeoff` scores them): the curve tables with their intervals and
paired tests against the progressive job, the WiSE-FT section, the operating points and the frontier question (does
any BehaviorLM operating point beat every joint one on both axes?), and the anchor-vs-tail plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from behaviorlm.stats import interval_over_seeds, mcnemar_exact, t_interval
from behaviorlm.tables import markdown_table

METRICS = ("acc_anchor", "acc_tail", "acc_overall")


def point_name(method: str, alpha: float, tau: float) -> str:
    """An operating point of the interpolation and logit-adjustment curves, as the tables and hits name it."""
    return f"{method}, alpha {alpha:g}, tau {tau:g}"


def wise_point_name(method: str, w: float) -> str:
    return f"{method}, WiSE-FT w {w:g}"


REFERENCE = point_name("progressive", 1.0, 0.0)  # the progressive job as it was tuned and tested
JOINT_AS_TUNED = point_name("joint", 1.0, 0.0)


def interval_cells(group: pd.DataFrame) -> dict[str, str]:
    """Each metric's mean over seeds with its Student-t 95% interval; the mean alone where there is no interval:
    one seed (a study on the one machine that holds a seed's adapters), or seeds that all gave the same accuracy
    (a tail of 0 in every seed), whose zero-width t interval would read as certainty (stats.interval_over_seeds)."""
    cells = {}
    for metric in METRICS:
        values = group[f"test/{metric}"].to_numpy()
        low, high = interval_over_seeds(values)
        interval = f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) else ""
        cells[metric.replace("acc_", "")] = f"{values.mean():.3f}{interval}"
    return cells


def discordant(hits: dict[int, dict[str, np.ndarray]], mine: str, theirs: str,
               on: dict[int, np.ndarray] | None = None) -> tuple[int, int]:
    """The test samples only `mine` ranks right at top 1 and those only `theirs` does, pooled over the seeds that
    scored both points; `on`: per seed, a mask of the samples to count (all where absent)."""
    b = c = 0
    for seed, by_point in hits.items():
        if mine in by_point and theirs in by_point:
            counted = True if on is None else on[seed]
            b += int(((by_point[mine] == 1) & (by_point[theirs] == 0) & counted).sum())
            c += int(((by_point[mine] == 0) & (by_point[theirs] == 1) & counted).sum())
    return b, c


def paired_cell(hits: dict[int, dict], point: str) -> str:
    """Overall hits gained / lost against the reference point, pooled over the seeds that have both, with an
    exact McNemar test."""
    if point == REFERENCE:
        return "ref."
    if not any(point in h and REFERENCE in h for h in hits.values()):
        return "no progressive job of the same seed"
    b, c = discordant(hits, point, REFERENCE)
    return f"+{b} / −{c}, p = {mcnemar_exact(b, c):.2g}"


def curve_table(jobs: pd.DataFrame, hits: dict[int, dict], knob: str) -> pd.DataFrame:
    """Each method's curve along one knob: tau at alpha 1 (logit adjustment) or alpha at tau 0 (interpolation)."""
    fixed, value = ("alpha", 1.0) if knob == "tau" else ("tau", 0.0)
    rows = []
    for (method, setting), group in jobs[jobs[fixed] == value].groupby(["method", knob], sort=False):
        point = point_name(method, value, setting) if knob == "tau" else point_name(method, setting, value)
        rows.append({"method": method, knob: setting, **({"towards": group["target_prior"].iloc[0]}
                                                          if knob == "tau" else {}),
                     "seeds": len(group), **interval_cells(group),
                     "val overall": f"{group['val_acc_overall'].mean():.3f}",
                     "vs progressive (McNemar, overall hits)": paired_cell(hits, point)})
    return pd.DataFrame(rows).sort_values(["method", knob], kind="stable")


def summarize(jobs: pd.DataFrame, hits: dict[int, dict], others: pd.DataFrame) -> str:
    seeds = jobs["seed"].nunique()
    text = (f"Anchor, tail and overall test accuracy: mean [Student-t 95% interval] over {seeds} "
            f"seed{'s' if seeds != 1 else ''} (the mean alone: one seed, or seeds that all gave the same accuracy); "
            "paired against the progressive job itself (alpha 1, tau 0) with exact McNemar tests pooled over seeds."
            "\n\n")
    if jobs["alpha"].nunique() > 1:
        text += "## Adapter interpolation (alpha: 1 = B-tuned, 0 = A-tuned; tau 0)\n\n"
        text += markdown_table(curve_table(jobs[jobs["method"].str.startswith("progressive")], hits, "alpha"))
        text += "\n\n"
    text += ("## Logit adjustment (tau towards the target prior: train for progressive, uniform for joint; alpha 1)"
             "\n\n" + markdown_table(curve_table(jobs, hits, "tau")))
    behaviorlm = jobs[jobs["method"].str.startswith("progressive")]
    by_val = behaviorlm.groupby(["method", "alpha", "tau"])["val_acc_overall"].mean()
    method, alpha, tau = by_val.idxmax()
    chosen = behaviorlm[(behaviorlm["method"] == method) & (behaviorlm["alpha"] == alpha) & (behaviorlm["tau"] == tau)]
    cells = interval_cells(chosen)
    text += (f"\n\nBehaviorLM's operating point chosen on validation over its whole grid (best mean validation "
             f"accuracy {by_val.max():.3f}): {method}, alpha = {alpha:g}, tau = {tau:g}; its test accuracy: anchor "
             f"{cells['anchor']}, tail {cells['tail']}, overall {cells['overall']} "
             f"({paired_cell(hits, point_name(method, alpha, tau))} against progressive).\n")
    if len(others):
        points = [{"stage_order": order, "seeds": len(group), **interval_cells(group)}
                  for order, group in others.groupby("stage_order")]
        text += "\nThe sweeps' other stage orders, as reference points:\n\n" + markdown_table(pd.DataFrame(points))
        text += "\n"
    return text


def wise_ft_section(wise: pd.DataFrame) -> str:
    """The WiSE-FT curves: per method and w, mean [Student-t 95%] over seeds; the best w on validation."""
    rows = [{"method": method, "w": w, "seeds": len(group), **interval_cells(group),
             "val overall": f"{group['val_acc_overall'].mean():.3f}"}
            for (method, w), group in wise.groupby(["method", "wise_alpha"])]
    text = ("\n## WiSE-FT toward the untuned model (w: 1 = the tuned job, 0 = the pretrained model; any stage order)"
            "\n\n" + markdown_table(pd.DataFrame(rows)) + "\n")
    for method, group in wise.groupby("method"):
        by_val = group.groupby("wise_alpha")["val_acc_overall"].mean()
        cells = interval_cells(group[group["wise_alpha"] == by_val.idxmax()])
        text += (f"\n{method}: w = {by_val.idxmax():g} is best on validation ({by_val.max():.3f}); its test accuracy: "
                 f"anchor {cells['anchor']}, tail {cells['tail']}, overall {cells['overall']}.")
    return text + "\n"


def operating_points(jobs: pd.DataFrame, wise: pd.DataFrame | None) -> pd.DataFrame:
    """Every operating point of every curve, one row per seed: point, side (BehaviorLM: a progressive method;
    joint), seed, anchor, tail (test accuracy) and val (validation overall accuracy)."""
    frames = [jobs.assign(point=[point_name(m, a, t) for m, a, t in zip(jobs["method"], jobs["alpha"], jobs["tau"])])]
    if wise is not None:
        frames.append(wise.assign(point=[wise_point_name(m, w) for m, w in zip(wise["method"], wise["wise_alpha"])]))
    points = pd.concat(frames, ignore_index=True)
    points["side"] = points["method"].map(lambda m: "BehaviorLM" if m.startswith("progressive") else m)
    return points.rename(columns={"test/acc_anchor": "anchor", "test/acc_tail": "tail", "val_acc_overall": "val"})[
        ["point", "side", "seed", "anchor", "tail", "val"]]


def beats(mine: pd.DataFrame, theirs: pd.DataFrame) -> tuple[bool, bool]:
    """(higher mean on both axes; and the Student-t 95% interval of the per-seed paired difference above zero on
    both axes) of one operating point over another, on the seeds both have."""
    pair = mine.set_index("seed")[["anchor", "tail"]].merge(
        theirs.set_index("seed")[["anchor", "tail"]].add_suffix("_other"), left_index=True, right_index=True)
    by_mean = all(pair[axis].mean() > pair[f"{axis}_other"].mean() for axis in ("anchor", "tail"))
    by_interval = by_mean and all(interval_over_seeds((pair[axis] - pair[f"{axis}_other"]).to_numpy())[0] > 0
                                  for axis in ("anchor", "tail"))
    return by_mean, by_interval


def sample_comparison(hits: dict[int, dict[str, np.ndarray]], roles: dict[int, np.ndarray], mine: str,
                      theirs: str) -> dict[str, tuple[int, int, float]]:
    """Per axis (anchor, tail): the test samples of that role only `mine` ranks right at top 1, those only `theirs`
    does, and the exact McNemar p of the two counts, pooled over the seeds that scored both points."""
    compared = {}
    for axis in ("anchor", "tail"):
        b, c = discordant(hits, mine, theirs, on={seed: role == axis for seed, role in roles.items()})
        compared[axis] = (b, c, mcnemar_exact(b, c))
    return compared


def sample_evidence(point: str, joint_points: list[str], hits: dict[int, dict[str, np.ndarray]],
                    roles: dict[int, np.ndarray]) -> str:
    """One BehaviorLM point against each of joint's on the test samples: against how many it is ahead on both axes
    with McNemar p < 0.05 on each (an intersection-union test: "ahead of this joint point on both axes" needs both
    to reject, with no correction), and its counts against joint as tuned."""
    compared = {other: sample_comparison(hits, roles, point, other) for other in joint_points}
    ahead = sum(all(b > c and p < 0.05 for b, c, p in axes.values()) for axes in compared.values())
    text = f"{point}: ahead on both axes with p < 0.05 against {ahead} of {len(compared)} joint points"
    if JOINT_AS_TUNED in compared:
        text += "; against joint as tuned: " + ", ".join(
            f"{axis} +{b} / −{c} (p = {p:.2g})" for axis, (b, c, p) in compared[JOINT_AS_TUNED].items())
    return text


def frontier_section(points: pd.DataFrame, hits: dict[int, dict[str, np.ndarray]] | None = None,
                     roles: dict[int, np.ndarray] | None = None) -> str:
    """Does any BehaviorLM operating point beat every joint operating point on both axes? And which points make
    up the frontier of all of them (no other point higher on both axes, by means). With the test hits of every
    point (`hits`: per seed, per point, 1 where the top-1 prediction is right; `roles`: per seed, each test
    sample's role, anchor or tail), the sample-level evidence for the points the answer names and for
    BehaviorLM's point chosen on validation: what one seed can show."""
    ours, joint = points[points["side"] == "BehaviorLM"], points[points["side"] == "joint"]
    text = "\n## The frontier: BehaviorLM's operating points against joint's\n\n"
    if ours.empty or joint.empty:
        return text + "Needs both progressive and joint jobs.\n"
    tally = []
    for point, mine in ours.groupby("point", sort=False):
        results = [(other, *beats(mine, theirs)) for other, theirs in joint.groupby("point", sort=False)]
        tally.append({"point": point, "beaten_by_mean": sum(r[1] for r in results),
                      "beaten_by_interval": sum(r[2] for r in results),
                      "unbeaten": [r[0] for r in results if not r[1]]})
    n_joint = joint["point"].nunique()

    def by_interval(count: int, of: str) -> str:  # one seed has no paired interval: say so, not "against 0"
        if points["seed"].nunique() < 2:
            return "one seed: no paired interval"
        return f"with both paired 95% intervals above zero against {count}{of}"

    winners = [t for t in tally if t["beaten_by_mean"] == n_joint]
    best = max(tally, key=lambda t: (t["beaten_by_mean"], t["beaten_by_interval"]))
    if winners:
        text += (f"**Yes, by means**: {len(winners)} of {len(tally)} BehaviorLM operating points have higher mean "
                 f"anchor and tail accuracy than all {n_joint} of joint's: "
                 + "; ".join(f"{t['point']} ({by_interval(t['beaten_by_interval'], ' of them')})"
                             for t in winners) + ".\n")
    elif best["beaten_by_mean"] == 0:
        text += (f"**No**: none of BehaviorLM's {len(tally)} operating points has higher mean anchor and tail "
                 f"accuracy than any of joint's {n_joint}.\n")
    else:
        text += (f"**No**: no BehaviorLM operating point ({len(tally)}) has higher mean anchor and tail accuracy than "
                 f"all {n_joint} of joint's. The closest, {best['point']}, beats {best['beaten_by_mean']} of them "
                 f"by means ({by_interval(best['beaten_by_interval'], '')}); it does not "
                 f"beat: {', '.join(best['unbeaten'])}.\n")
    if hits is not None:
        chosen = ours.groupby("point", sort=False)["val"].mean().idxmax() if "val" in points else None
        named = [t["point"] for t in winners] or [best["point"]]
        named += [chosen] if chosen is not None and chosen not in named else []
        text += ("\nBy the test samples (exact McNemar on the anchor and on the tail samples' top-1 hits, pooled over "
                 "seeds; a point named above was picked by its test means, so its p-values describe it and do not "
                 "confirm it; the point chosen on validation, the best mean validation accuracy of all "
                 f"{len(tally)}, is {chosen or 'not known here'}):\n\n")
        text += "".join(f"- {sample_evidence(point, list(joint['point'].unique()), hits, roles)}\n"
                        for point in named)
    means = points.groupby(["point", "side"], sort=False)[["anchor", "tail"]].mean().reset_index()
    at_least = [(means["anchor"] >= row.anchor) & (means["tail"] >= row.tail) for row in means.itertuples()]
    front = means[[not (above & ((means["anchor"] > row.anchor) | (means["tail"] > row.tail))).any()
                   for above, row in zip(at_least, means.itertuples())]]
    rows = []  # points tied on both means share a row
    for (anchor, tail), tied in front.groupby(["anchor", "tail"], sort=False):
        more = f" (and {len(tied) - 1} more with the same means)" if len(tied) > 1 else ""
        rows.append({"point": tied["point"].iloc[0] + more, "sides": ", ".join(sorted(set(tied["side"]))),
                     "anchor": f"{anchor:.3f}", "tail": f"{tail:.3f}"})
    front_frame = pd.DataFrame(rows).sort_values("tail")
    counts = front["side"].value_counts().to_dict()
    text += (f"\nThe frontier of all {len(means)} operating points (means over seeds; no other point at least as high "
             f"on both axes and higher on one): {', '.join(f'{n} {side}' for side, n in counts.items())}.\n\n")
    return text + markdown_table(front_frame) + "\n"


def plot(jobs: pd.DataFrame, others: pd.DataFrame, path: Path, wise: pd.DataFrame | None = None) -> None:
    """Anchor against tail accuracy: one curve per method and remedy, the other stage orders as points; bars are
    the Student-t 95% intervals over seeds on both axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def point(group: pd.DataFrame) -> tuple[float, float, float, float]:
        tail, anchor = group["test/acc_tail"].to_numpy(), group["test/acc_anchor"].to_numpy()
        return (tail.mean(), anchor.mean(), tail.mean() - t_interval(tail)[0], anchor.mean() - t_interval(anchor)[0])

    fig, ax = plt.subplots(figsize=(7, 5.5))
    curves = []
    for method, frame in jobs.groupby("method", sort=False):
        curves += [(f"{method} + logit adjustment (τ)", "tau", frame[frame["alpha"] == 1.0]),
                   (f"{method}, A↔B interpolation (α)", "alpha", frame[frame["tau"] == 0.0])]
    if wise is not None:
        curves += [(f"{method}, WiSE-FT (w)", "wise_alpha", group) for method, group in wise.groupby("method")]
    for label, knob, frame in curves:
        if frame[knob].nunique() < 2:
            continue
        stats = [(value, *point(group)) for value, group in frame.groupby(knob)]
        xs, ys, xerr, yerr = (np.array([s[i] for s in stats]) for i in range(1, 5))
        ax.errorbar(xs, ys, xerr=np.nan_to_num(xerr), yerr=np.nan_to_num(yerr), fmt="o-", capsize=2, label=label,
                    alpha=0.85, markersize=3)
        for value, x, y in zip((s[0] for s in stats), xs, ys):
            ax.annotate(f"{ {'tau': 'τ', 'alpha': 'α'}.get(knob, 'w')}={value:g}", (x, y), fontsize=6,
                        textcoords="offset points", xytext=(3, 3))
    for order, group in others.groupby("stage_order"):
        x, y, xe, ye = point(group)
        ax.errorbar([x], [y], xerr=[np.nan_to_num(xe)], yerr=[np.nan_to_num(ye)], fmt="s", capsize=2, label=order)
    ax.set_xlabel("tail accuracy (test)")
    ax.set_ylabel("anchor accuracy (test)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
