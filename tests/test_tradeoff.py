"""The frontier question of `make ablation-tradeoff`: does any BehaviorLM operating point beat every joint one?"""

import json

import numpy as np
import pandas as pd
import pytest

from experiments.tradeoff import pooled_jobs
from experiments.tradeoff_report import (beats, frontier_section, interval_cells, sample_comparison, sample_evidence,
                                         wise_ft_section)


def points(rows: list[tuple[str, str, list[float], list[float]]]) -> pd.DataFrame:
    """(point, side, anchor per seed, tail per seed) -> one row per seed, as operating_points gives them."""
    return pd.DataFrame([{"point": point, "side": side, "seed": seed, "anchor": anchor[seed], "tail": tail[seed]}
                         for point, side, anchor, tail in rows for seed in range(len(anchor))])


JOINT = [("joint, alpha 1, tau 0", "joint", [0.30, 0.31, 0.29], [0.05, 0.04, 0.06]),
         ("joint, alpha 1, tau 1", "joint", [0.25, 0.26, 0.24], [0.08, 0.07, 0.09])]


def test_a_point_above_both_of_joints_on_both_axes_answers_yes_with_its_interval_count():
    frame = points([*JOINT, ("progressive, alpha 1, tau 0", "BehaviorLM", [0.32, 0.335, 0.31], [0.10, 0.095, 0.11]),
                    ("progressive, alpha 0, tau 0", "BehaviorLM", [0.35, 0.36, 0.34], [0.00, 0.01, 0.00])])
    text = frontier_section(frame)
    assert "**Yes, by means**: 1 of 2 BehaviorLM operating points" in text
    # +0.02, +0.025, +0.02 anchor and +0.05, +0.055, +0.05 tail over the first: t(2) half-widths 0.007 leave both
    # intervals above zero; likewise over the second (+0.07, +0.075, +0.07 and +0.02, +0.025, +0.02)
    assert "progressive, alpha 1, tau 0 (with both paired 95% intervals above zero against 2 of them)" in text
    # the frontier: the winner and the anchor-heavy A-tuned point; both joint points lie under the winner
    assert "2 BehaviorLM" in text and "| joint" not in text


def test_a_joint_point_with_more_tail_makes_the_answer_no_and_is_named():
    tail_heavy = ("joint, WiSE-FT w 0.5", "joint", [0.20, 0.21, 0.19], [0.15, 0.14, 0.16])
    frame = points([*JOINT, tail_heavy,
                    ("progressive, alpha 1, tau 0", "BehaviorLM", [0.32, 0.33, 0.31], [0.10, 0.09, 0.11])])
    text = frontier_section(frame)
    assert "**No**" in text and "beats 2 of them by means" in text and "it does not beat: joint, WiSE-FT w 0.5" in text
    assert "1 BehaviorLM, 1 joint" in text or "1 joint, 1 BehaviorLM" in text


def test_a_one_seed_frontier_says_it_has_no_interval_rather_than_a_count_of_zero():
    one_seed = points([(point, side, anchor[:1], tail[:1]) for point, side, anchor, tail in
                       [*JOINT, ("progressive, alpha 1, tau 0", "BehaviorLM", [0.32], [0.10])]])
    text = frontier_section(one_seed)
    assert "progressive, alpha 1, tau 0 (one seed: no paired interval)" in text and "against 0" not in text
    closest = frontier_section(points([(p, s, a[:1], t[:1]) for p, s, a, t in
                                       [*JOINT, ("progressive, alpha 0", "BehaviorLM", [0.31], [0.06])]]))
    assert "beats 1 of them by means (one seed: no paired interval)" in closest


def test_the_sample_level_evidence_counts_each_axes_hits_against_each_joint_point_pooled_over_seeds():
    # 10 anchor and 10 tail test samples; BehaviorLM's point right on 8 anchors and 6 tails, joint as tuned on none,
    # joint's WiSE-FT point on the first 3 of those tails
    roles = np.array(["anchor"] * 10 + ["tail"] * 10)
    mine, as_tuned = np.array([1] * 8 + [0] * 2 + [1] * 6 + [0] * 4), np.zeros(20, dtype=int)
    wise = np.array([0] * 10 + [1] * 3 + [0] * 7)
    by_point = {"p": mine, "joint, alpha 1, tau 0": as_tuned, "joint, WiSE-FT w 0.5": wise}
    one_seed = sample_comparison({0: by_point}, {0: roles}, "p", "joint, WiSE-FT w 0.5")
    assert one_seed == {"anchor": (8, 0, pytest.approx(2 * 0.5 ** 8)), "tail": (3, 0, pytest.approx(0.25))}
    # a seed that did not score the point adds nothing; two that did add their counts
    hits = {0: by_point, 1: by_point, 2: {"joint, alpha 1, tau 0": as_tuned}}
    text = sample_evidence("p", ["joint, alpha 1, tau 0", "joint, WiSE-FT w 0.5"], hits, {s: roles for s in hits})
    # ahead of joint as tuned on both axes (p 3e-5, 5e-4), and of WiSE-FT's point (anchor +16 / -0, tail +6 / -0:
    # p 0.031, both reject)
    assert text == ("p: ahead on both axes with p < 0.05 against 2 of 2 joint points; against joint as tuned: "
                    "anchor +16 / −0 (p = 3.1e-05), tail +12 / −0 (p = 0.00049)")
    assert "against 1 of 2" in sample_evidence("p", ["joint, alpha 1, tau 0", "joint, WiSE-FT w 0.5"],
                                               {0: by_point}, {0: roles})  # one seed: the tail's 3 / 0 is p 0.25
    # a point behind on one axis is not ahead, however far ahead on the other
    behind = {**by_point, "q": np.array([1] * 10 + [0] * 10)}
    assert "against 0 of 1" in sample_evidence("q", ["joint, WiSE-FT w 0.5"], {0: behind}, {0: roles})
    # the frontier names the answer's points and the one chosen on validation, each with its evidence
    frame = points([("joint, alpha 1, tau 0", "joint", [0.0], [0.0]), ("joint, WiSE-FT w 0.5", "joint", [0.0], [0.3]),
                    ("p", "BehaviorLM", [0.8], [0.6]), ("q", "BehaviorLM", [1.0], [0.0])])
    frame["val"] = frame["point"].map({"p": 0.2, "q": 0.3}).fillna(0.1)
    text = frontier_section(frame, {0: behind}, {0: roles})
    assert "**Yes, by means**: 1 of 2" in text and "the best mean validation accuracy of all 2, is q" in text
    assert "- p: ahead on both axes with p < 0.05 against 1 of 2 joint points" in text
    assert "- q: ahead on both axes with p < 0.05 against 0 of 2 joint points" in text


def test_a_lead_in_the_means_that_flips_across_seeds_is_not_a_lead_by_interval():
    mine = points([("p", "BehaviorLM", [0.40, 0.20, 0.36], [0.10, 0.10, 0.10])])
    theirs = points([("j", "joint", [0.30, 0.30, 0.30], [0.05, 0.05, 0.05])])
    assert beats(mine, theirs) == (True, False)  # anchor +0.10, -0.10, +0.06: mean +0.02, interval spans zero
    # +0.020, +0.025, +0.015 anchor and +0.05, +0.04, +0.06 tail: t(2) half-widths 0.012 and 0.025 leave both > 0
    steady = points([("p", "BehaviorLM", [0.32, 0.325, 0.315], [0.10, 0.09, 0.11])])
    assert beats(steady, theirs) == (True, True)
    wider = points([("p", "BehaviorLM", [0.32, 0.33, 0.31], [0.10, 0.09, 0.11])])  # anchor half-width 0.025 > 0.02
    assert beats(wider, theirs) == (True, False)
    assert beats(theirs, steady) == (False, False)
    # the same lead in every seed (+0.02 anchor, +0.05 tail, as a count over a few hundred samples often ties):
    # t's interval has zero width, no evidence about seed noise, so no lead by interval
    tied = points([("p", "BehaviorLM", [0.32, 0.32, 0.32], [0.10, 0.10, 0.10])])
    assert beats(tied, theirs) == (True, False)


def test_a_curve_point_without_spread_over_seeds_prints_its_mean_without_an_interval():
    group = pd.DataFrame({"test/acc_anchor": [0.30, 0.32, 0.31], "test/acc_tail": [0.0, 0.0, 0.0],
                          "test/acc_overall": [0.20, 0.21, 0.22]})
    cells = interval_cells(group)
    # sd 0.01 over 3 seeds: t(2) half-width 4.303 * 0.01 / sqrt(3) = 0.025
    assert cells["anchor"] == "0.310 [0.285, 0.335]" and cells["overall"] == "0.210 [0.185, 0.235]"
    assert cells["tail"] == "0.000"  # a tail of 0 in every seed: not the certainty of [0.000, 0.000]
    # one seed (a study on the machine that holds one seed's adapters): no interval, and no "[nan, nan]"
    assert interval_cells(group.iloc[:1]) == {"anchor": "0.300", "tail": "0.000", "overall": "0.200"}
    wise = pd.DataFrame([{"method": "joint", "wise_alpha": w, "seed": 2, "val_acc_overall": 0.2 + w / 10,
                          "test/acc_anchor": 0.3, "test/acc_tail": 0.05 * w, "test/acc_overall": 0.2}
                         for w in (0.0, 0.5, 1.0)])
    text = wise_ft_section(wise)
    assert "nan" not in text and "| joint | 0.5 | 1 | 0.300 | 0.025 | 0.200 |" in text.replace("  ", " ")


def test_sweeps_are_pooled_by_method_and_seed_and_a_repeated_rate_is_taken_once(tmp_path):
    def job(sweep: str, number: int, order: str, seed: int, rate: float) -> None:
        folder = tmp_path / sweep / "runs" / str(number)
        (folder / ".hydra").mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"status": "completed", "stage_order": order, "seed": seed}))
        (folder / ".hydra" / "config.yaml").write_text(f"train:\n  b_tuning:\n    learning_rate: {rate}\n")
        (folder / "adapter").mkdir()
        (folder / "adapter" / "adapter_model.safetensors").write_bytes(b"")

    for seed in (0, 1):  # paper-main: progressive and joint at the preset's 1e-4
        job("paper-main", 2 * seed, "progressive", seed, 1e-4)
        job("paper-main", 2 * seed + 1, "joint", seed, 1e-4)
    for number, (seed, rate) in enumerate([(0, 1e-4), (0, 5e-4), (1, 1e-4), (1, 5e-4)]):  # ablation-b-rate
        job("b-rate", number, "progressive", seed, rate)
    pooled = pooled_jobs([tmp_path / "paper-main", tmp_path / "b-rate"])
    methods = sorted((m["method"], m["seed"], folder.parent.parent.name) for folder, m in pooled.items())
    assert methods == [("joint", 0, "paper-main"), ("joint", 1, "paper-main"),
                       ("progressive", 0, "paper-main"), ("progressive", 1, "paper-main"),
                       ("progressive, B lr 0.0005", 0, "b-rate"), ("progressive, B lr 0.0005", 1, "b-rate")]

    # --seeds: the others are not read
    assert {m["seed"] for m in pooled_jobs([tmp_path / "paper-main"], seeds={1}).values()} == {1}
    # a job restored from committed results has no adapter: its seed cannot be studied on this machine
    (tmp_path / "paper-main" / "runs" / "3" / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(SystemExit, match=r"paper-main/runs/3 \(seed 1\) has no adapter.*--seeds"):
        pooled_jobs([tmp_path / "paper-main"])
    assert len(pooled_jobs([tmp_path / "paper-main"], seeds={0})) == 2

    (tmp_path / "b-rate" / "runs" / "0" / ".hydra" / "config.yaml").unlink()  # a committed folder: metrics only
    with pytest.raises(SystemExit, match="b-rate/runs/0 has no .hydra/config.yaml"):
        pooled_jobs([tmp_path / "b-rate"])
