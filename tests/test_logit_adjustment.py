"""Post-hoc logit adjustment: the training prior comes back by tau after a balanced stage, at test time only."""

import json

import numpy as np
import pandas as pd
import pytest

from behaviorlm.data.dataset import load_dataset
from behaviorlm.data.samples import BehaviorVocab
from behaviorlm.pipeline import run
from behaviorlm.stages import logit_adjustment

VOCAB = BehaviorVocab(names=["Home", "Office", "Gym", "Zoo"], train_counts={"Home": 60, "Office": 30, "Gym": 9,
                                                                            "Zoo": 0},
                      categories={}, anchors={"Home", "Office"}, anchor_threshold=0.2)


def test_offsets_raise_anchors_and_lower_the_tail_after_a_balanced_set():
    balanced = ["Home", "Office", "Gym", "Zoo"] * 5
    offset = logit_adjustment(VOCAB, balanced, tau=1.0)
    home, office, gym, zoo = offset
    assert home > office > 0 > gym > zoo
    # exactly log(p_train) - log(p_B), both add-one smoothed: p_B uniform, p_train (61, 31, 10, 1) / 103
    assert home == pytest.approx(np.log(61 / 103) - np.log(0.25))
    assert np.allclose(logit_adjustment(VOCAB, balanced, tau=0.5), offset / 2)
    assert not logit_adjustment(VOCAB, balanced, tau=0.0).any()


def test_tuning_on_the_training_prior_needs_no_adjustment():
    trained_on = ["Home"] * 60 + ["Office"] * 30 + ["Gym"] * 9
    assert np.allclose(logit_adjustment(VOCAB, trained_on, tau=1.0), 0.0)



def test_uniform_target_is_menons_adjustment_and_moves_joint_towards_the_tail():
    trained_on = ["Home"] * 60 + ["Office"] * 30 + ["Gym"] * 9  # joint: tuned on the training distribution
    offset = logit_adjustment(VOCAB, trained_on, tau=1.0, target_prior="uniform")
    home, office, gym, zoo = offset
    assert zoo > gym > 0 > office > home  # the rarer the behavior, the larger the lift
    # -tau * log p_train up to a constant (which does not change a ranking): p_train (61, 31, 10, 1) / 103
    assert np.allclose(offset - offset.mean(), -np.log(np.array([61, 31, 10, 1])) + np.log([61, 31, 10, 1]).mean())
    assert np.allclose(logit_adjustment(VOCAB, trained_on, tau=0.5, target_prior="uniform"), offset / 2)
    with pytest.raises(ValueError, match="target_prior 'flat'"):
        logit_adjustment(VOCAB, trained_on, tau=1.0, target_prior="flat")


def test_tau_towards_the_training_prior_on_joint_is_refused_as_a_no_op(compose):
    from behaviorlm.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match="scoring.logit_adjustment.target_prior' = 'train'.*stage_order=joint"):
        validate_config(compose("stage_order=joint", "scoring.logit_adjustment.tau=0.5"))
    validate_config(compose("stage_order=joint", "scoring.logit_adjustment.tau=0.5",
                            "scoring.logit_adjustment.target_prior=uniform"))
    validate_config(compose("stage_order=progressive", "scoring.logit_adjustment.tau=0.5"))
    with pytest.raises(ConfigError, match="target_prior' = 'prior'.*train \\| uniform"):
        validate_config(compose("scoring.logit_adjustment.target_prior=prior"))

def test_a_behavior_missing_from_the_training_counts_gets_a_finite_add_one_offset():
    # train_counts of a loaded vocab lists only behaviors that were training targets: 'Zoo' has no entry at all
    vocab = BehaviorVocab(names=["Home", "Office", "Zoo"], train_counts={"Home": 7, "Office": 2}, categories={},
                          anchors={"Home"}, anchor_threshold=0.2)
    offset = logit_adjustment(vocab, ["Home", "Office", "Zoo"], tau=1.0)
    assert np.isfinite(offset).all()
    # p_train = (8, 3, 1) / 12, p_tuned = uniform
    assert offset[2] == pytest.approx(np.log(1 / 12) - np.log(1 / 3))


@pytest.mark.slow
def test_tau_moves_test_predictions_to_anchors_and_reuses_the_tuned_stages(compose, tmp_path):
    shares = []
    for tau in (-3.0, 0.0, 3.0):
        out = tmp_path / f"tau{tau}"
        cfg = compose("experiment=smoke", "stage_order=balanced_only", "debug=fast", f"cache.dir={tmp_path}/cache",
                      f"scoring.logit_adjustment.tau={tau}", output_dir=out)
        metrics = run(cfg)
        predictions = pd.read_csv(out / "test_predictions.csv")
        top1 = predictions["top5"].map(lambda ranked: (json.loads(ranked) or [None])[0])
        shares.append(top1.isin(load_dataset(cfg).vocab.anchors).mean())
        assert metrics["test/logit_adjustment_tau"] == tau
    assert metrics["b_tuning/cache_hit"] == 1  # the tuned stage came from the cache: only the test re-ranked
    assert shares[0] <= shares[1] <= shares[2] and shares[0] < shares[2], shares
