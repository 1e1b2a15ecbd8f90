"""Difficulty/contrastive selection: tiers fill in order, exactly F per behavior where F exist."""

import json

import numpy as np
import pandas as pd
import pytest

from behaviorlm.data.samples import BehaviorVocab, Sample
from behaviorlm.selection import scoring_pool, select_balanced

NAMES = ["A", "B", "C", "D"]
VOCAB = BehaviorVocab(names=NAMES, train_counts={n: 1 for n in NAMES},
                      categories={"A": "x", "B": "x", "C": "y", "D": "y"}, anchors={"A"})


def sample(target, i):
    return Sample(user=f"u{i}", time=pd.Timestamp("2024-01-01") + pd.Timedelta(hours=i), history=("A",),
                  history_times=((0, 0),), target=target)


def scores_for(predictions, margins=None):
    """One score row per sample whose argmax is the given prediction."""
    rows = np.zeros((len(predictions), len(NAMES)), dtype=np.float32)
    for r, predicted in enumerate(predictions):
        rows[r, NAMES.index(predicted)] = 1.0 if margins is None else margins[r]
    return rows


def test_only_mispredicted_samples_when_enough_exist_contrastive_first():
    # 6 samples of A: predictions B (same category), C (other category), A (correct)
    samples = [sample("A", i) for i in range(6)]
    predictions = ["B", "C", "A", "B", "C", "A"]
    selection = select_balanced(samples, VOCAB, 3, seed=0, scores=scores_for(predictions), scored=range(6))
    chosen = [predictions[i] for i in selection.indices]
    assert len(chosen) == 3 and "A" not in chosen  # all mispredicted
    assert selection.tiers == ["contrastive", "contrastive", "mispredicted"]
    assert chosen[:2] == ["B", "B"]


def test_fill_order_then_exactly_f_and_low_margin_correct_by_margin():
    samples = [sample("C", i) for i in range(5)]
    # one misprediction (A, other category), four correct with margins 0.9, 0.1, 0.5, 0.3
    rows = np.zeros((5, 4), dtype=np.float32)
    rows[0, NAMES.index("A")] = 1.0
    for r, margin in zip(range(1, 5), (0.9, 0.1, 0.5, 0.3)):
        rows[r, NAMES.index("C")] = margin
    selection = select_balanced(samples, VOCAB, 4, seed=0, scores=rows, scored=range(5))
    assert selection.indices == [0, 2, 4, 3]  # mispredicted, then margins 0.1, 0.3, 0.5
    assert selection.tiers == ["mispredicted", "low_margin", "low_margin", "low_margin"]


def test_unscored_samples_fill_last_and_small_behaviors_give_all_they_have():
    samples = [sample("A", i) for i in range(4)] + [sample("D", 10)]
    selection = select_balanced(samples, VOCAB, 3, seed=0, scores=scores_for(["B"]), scored=[0])
    assert selection.per_behavior["A"] == {"contrastive": 1, "unscored": 2}
    assert selection.per_behavior["D"] == {"unscored": 1}
    assert len(selection.indices) == 4


def test_contrastive_off_and_random_control():
    samples = [sample("A", i) for i in range(6)]
    predictions = ["B", "C", "A", "B", "C", "A"]
    plain = select_balanced(samples, VOCAB, 3, seed=0, scores=scores_for(predictions), scored=range(6),
                            contrastive=False)
    assert set(plain.tiers) == {"mispredicted"}
    randomised = select_balanced(samples, VOCAB, 3, seed=0, difficulty=False)
    assert randomised.tiers == ["random"] * 3
    assert randomised.indices == select_balanced(samples, VOCAB, 3, seed=0, difficulty=False).indices
    assert len(set(randomised.indices)) == 3


def test_scoring_pool_caps_each_behavior():
    samples = [sample("A", i) for i in range(10)] + [sample("B", 20 + i) for i in range(2)]
    pool = scoring_pool(samples, 3, seed=0)
    assert len(pool) == 5 and sum(1 for i in pool if samples[i].target == "A") == 3
    assert scoring_pool(samples, None, 0) == list(range(12))


def test_score_rows_follow_the_scored_pool_not_the_sample_index():
    """Row k of `scores` belongs to sample scored[k]: with a pool that is not range(n), looking a row up by the
    sample's own index would tier the wrong samples."""
    samples = [sample("C", i) for i in range(8)]
    scored = [6, 1, 4]  # only these were scored, in this order
    rows = np.zeros((3, 4), dtype=np.float32)
    rows[0, NAMES.index("D")] = 1.0  # sample 6: mispredicted as D, the same category as C
    rows[1, NAMES.index("A")] = 1.0  # sample 1: mispredicted as A, another category
    rows[2, NAMES.index("C")] = 0.4  # sample 4: correct, margin 0.4
    selection = select_balanced(samples, VOCAB, 4, seed=0, scores=rows, scored=scored)
    assert selection.indices[:3] == [6, 1, 4]
    assert selection.tiers == ["contrastive", "mispredicted", "low_margin", "unscored"]


def test_low_margin_comes_before_unscored_and_a_tie_is_not_a_misprediction():
    samples = [sample("C", i) for i in range(3)]
    rows = np.zeros((2, 4), dtype=np.float32)
    rows[0, NAMES.index("C")] = rows[0, NAMES.index("A")] = 0.7  # sample 0: a tie between C and A, margin 0
    rows[1, NAMES.index("C")] = 0.2  # sample 1: correct, margin 0.2
    one = select_balanced(samples, VOCAB, 1, seed=0, scores=rows, scored=[0, 1])
    assert one.indices == [0] and one.tiers == ["low_margin"]  # the tie: the smallest margin, still correct
    two = select_balanced(samples, VOCAB, 3, seed=0, scores=rows, scored=[0, 1])
    assert two.tiers == ["low_margin", "low_margin", "unscored"] and two.indices == [0, 1, 2]


def test_behaviors_come_in_vocabulary_order_and_tiers_are_counted():
    vocab = BehaviorVocab(names=["D", "B", "C", "A"], train_counts={n: 1 for n in "ABCD"},
                          categories={"A": "x", "B": "x", "C": "y", "D": "y"}, anchors={"D"})
    samples = [sample(t, i) for i, t in enumerate("ABCDABCD")]
    selection = select_balanced(samples, vocab, 2, seed=0, difficulty=False)
    assert list(selection.per_behavior) == ["D", "B", "C", "A"]  # not alphabetical, not first-seen
    assert [samples[i].target for i in selection.indices] == list("DDBBCCAA")
    assert selection.tier_counts() == {"random": 8}
    mixed = select_balanced([sample("C", i) for i in range(3)], VOCAB, 3, seed=0,
                            scores=scores_for(["A", "C"], margins=[1.0, 0.3]), scored=[0, 1])
    assert mixed.tier_counts() == {"mispredicted": 1, "low_margin": 1, "unscored": 1}


def test_difficulty_off_ignores_the_scores_it_is_given():
    samples = [sample("A", i) for i in range(6)]
    selection = select_balanced(samples, VOCAB, 3, seed=0, scores=scores_for(["B"] * 6), scored=range(6),
                                difficulty=False)
    assert selection.tiers == ["random"] * 3


def test_the_scoring_pool_is_seeded_capped_per_behavior_and_sorted():
    samples = [sample("A", i) for i in range(20)] + [sample("B", 20 + i) for i in range(4)]
    pool = scoring_pool(samples, 15, seed=3)
    assert pool == sorted(pool) and len(pool) == 15 + 4  # A capped at 15, B keeps its 4
    # drawn without replacement: 15 of 20 with replacement would repeat one (all distinct: p = 20!/5!/20^15 < 1e-3)
    assert len(set(pool)) == len(pool)
    assert set(range(20, 24)) <= set(pool)
    assert scoring_pool(samples, 15, seed=3) == pool  # the same seed, the same pool
    assert scoring_pool(samples, 15, seed=4) != pool  # another seed, another draw of A
    assert scoring_pool(samples, None, seed=3) == list(range(24))


def test_vocabulary_round_trips_through_its_dict():
    vocab = BehaviorVocab(names=NAMES, train_counts={"A": 9, "B": 3, "C": 1, "D": 0}, categories=VOCAB.categories,
                          anchors={"A"}, anchor_threshold=0.3)  # nothing at its default
    restored = BehaviorVocab.from_dict(json.loads(json.dumps(vocab.to_dict())))  # as a manifest stores it
    for field in ("names", "train_counts", "categories", "anchors", "anchor_threshold"):
        assert getattr(restored, field) == getattr(vocab, field), field
    assert restored.role("A") == "anchor" and restored.role("B") == "tail"
    # a name with no training sample is unseen, whether counted as 0 or absent from the counts (a test-only name)
    assert restored.role("D") == "unseen" and restored.role("a name never counted") == "unseen"


class ScoringModel:
    """The part of a BehaviorModel the selection stages read: its vocabulary and `scores`, here a fixed score row
    per sample (keyed by the sample's user) so that the expected selection can be worked out by hand."""

    def __init__(self, rows: dict):
        self.vocab, self.rows, self.scored = VOCAB, rows, []

    def scores(self, samples, progress=None):
        self.scored.append([s.user for s in samples])
        return np.stack([self.rows[s.user] for s in samples])


def selection_config(**overrides):
    from omegaconf import OmegaConf
    return OmegaConf.create({"strategy": "difficulty", "difficulty": True, "contrastive": True,
                             "max_scored_per_behavior": None, **overrides})


def test_difficulty_selection_scores_the_capped_pool_and_reports_what_it_chose():
    from behaviorlm.stages import difficulty_selection

    # 6 samples of C: predicted D (same category), A, C (margin 0.2), C (margin 0.6), D, C (margin 0.9)
    samples = [sample("C", i) for i in range(6)]
    predicted = [("D", 1.0), ("A", 1.0), ("C", 0.2), ("C", 0.6), ("D", 1.0), ("C", 0.9)]
    rows = {}
    for i, (name, margin) in enumerate(predicted):
        rows[f"u{i}"] = np.zeros(4, dtype=np.float32)
        rows[f"u{i}"][NAMES.index(name)] = margin
    model = ScoringModel(rows)
    selection, report = difficulty_selection(model, samples, 3, selection_config(), seed=0)
    assert model.scored == [[f"u{i}" for i in range(6)]]  # the whole pool, scored once
    assert sorted(selection.indices[:2]) == [0, 4] and selection.indices[2] == 1
    assert report == {"n_scored": 6, "n_selected": 3, "share_random_fill": 0.0, "tier_contrastive": 2,
                      "tier_mispredicted": 1, "train_acc_scored": 0.5}
    _, plain = difficulty_selection(ScoringModel(rows), samples, 3, selection_config(contrastive=False), seed=0)
    assert "tier_contrastive" not in plain and plain["tier_mispredicted"] == 3  # same category no longer first
    # a capped pool: 4 of the 6 scored, the rest fills at random (and says so)
    capped, report = difficulty_selection(ScoringModel(rows), samples, 6, selection_config(max_scored_per_behavior=4),
                                          seed=0)
    assert report["n_scored"] == 4 and report["tier_unscored"] == 2
    assert report["share_random_fill"] == pytest.approx(2 / 6)
    # scores computed earlier (the stage cache) are used as they are: the model is not asked again
    cached = ScoringModel(rows)
    again, _ = difficulty_selection(cached, samples, 3, selection_config(), seed=0,
                                    scored=(list(range(6)), np.stack([rows[f"u{i}"] for i in range(6)])))
    assert cached.scored == [] and again.indices == selection.indices
    # one slot, filled at random because nothing was scored: all of the selection is random fill
    _, alone = difficulty_selection(cached, samples[:1], 1, selection_config(), seed=0,
                                    scored=([], np.zeros((0, 4), dtype=np.float32)))
    assert alone["n_selected"] == 1 and alone["share_random_fill"] == 1.0
    assert "train_acc_scored" not in alone  # not a NaN in metrics.json


def test_random_and_tail_stages_ignore_scores_follow_the_seed_and_tail_skips_anchors():
    from behaviorlm.stages import difficulty_selection, random_balanced, tail_balanced, uses_difficulty

    samples = [sample(t, i) for i, t in enumerate("ABCD" * 6)]
    model = ScoringModel({})  # any call to scores would fail: no rows
    for cfg in (selection_config(strategy="random"), selection_config(difficulty=False)):
        assert not uses_difficulty(cfg)
        chosen, report = difficulty_selection(model, samples, 2, cfg, seed=0)
        assert set(chosen.tiers) == {"random"} and report["n_scored"] == 0 and "train_acc_scored" not in report
    assert uses_difficulty(selection_config())
    first, report = random_balanced(model, samples, 4, seed=1)
    assert report == {"n_selected": 16}
    assert random_balanced(model, samples, 4, seed=1)[0].indices == first.indices
    assert random_balanced(model, samples, 4, seed=2)[0].indices != first.indices
    tail, report = tail_balanced(model, samples, 4, seed=1)
    assert report == {"n_selected": 12} and "A" not in {samples[i].target for i in tail.indices}  # A is the anchor
    assert tail_balanced(model, samples, 4, seed=1)[0].indices == tail.indices
    assert tail_balanced(model, samples, 4, seed=2)[0].indices != tail.indices
    assert model.scored == []


def test_a_capped_selection_pool_and_its_random_fill_follow_the_seed():
    from behaviorlm.stages import difficulty_selection

    samples = [sample("C", i) for i in range(20)]
    rows = {f"u{i}": np.eye(4, dtype=np.float32)[NAMES.index("C")] * (i + 1) / 20 for i in range(20)}
    cfg = selection_config(max_scored_per_behavior=5)
    runs, reports = zip(*[difficulty_selection(ScoringModel(rows), samples, 8, cfg, seed=seed) for seed in (0, 0, 1)])
    assert runs[0].tier_counts() == {"low_margin": 5, "unscored": 3}
    assert reports[0]["train_acc_scored"] == 1.0  # all 5 scored samples predicted right
    assert runs[0].indices == runs[1].indices  # the same seed: the same pool and the same fill
    assert runs[0].indices != runs[2].indices
