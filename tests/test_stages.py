"""What each tuning stage trains on: the samples its stage order names, the A-Tuning set (every anchor sample plus
the requested share of conversations) and exactly the settings the config hands the training loop."""

import json
from pathlib import Path

import pandas as pd
import pytest

from behaviorlm.data.samples import Sample
from behaviorlm.pipeline import run


# ---- stage orders train on what they say ------------------------------------------------------------------------

@pytest.mark.parametrize("stage_order,expected", [
    ("tail_first", [("b_tuning", "tail"), ("a_tuning", "anchor")]),
    ("tail_only", [("b_tuning", "tail")]),
    ("balanced_first", [("b_tuning", "both"), ("a_tuning", "anchor")]),
    ("progressive", [("a_tuning", "anchor"), ("b_tuning", "both")]),
])
def test_each_stage_trains_on_the_samples_its_order_names(compose, tmp_path, monkeypatch, stage_order, expected):
    import behaviorlm.pipeline as pipeline

    calls = []
    real_tune = pipeline.tune

    def recording_tune(bm, examples, *args, **kwargs):
        names = {tuple(bm.prompts.answer_ids(n)): n for n in bm.vocab.names}
        roles = {"anchor" if names[e.answer_ids] in bm.vocab.anchors else "tail"
                 for e in examples if e.kind == "behavior"}
        calls.append((args[4], "both" if len(roles) == 2 else roles.pop()))
        return real_tune(bm, examples, *args, **kwargs)

    monkeypatch.setattr(pipeline, "tune", recording_tune)
    cfg = compose("experiment=smoke", f"stage_order={stage_order}", "debug=fast", "cache=off",
                  "samples_per_behavior=3", "selection.max_scored_per_behavior=null", output_dir=tmp_path)
    metrics = run(cfg)
    assert calls == expected
    if stage_order in ("tail_first", "tail_only"):
        assert metrics["b_tuning/n_anchor_targets"] == 0 and metrics["b_tuning/n_tail_targets"] > 0
        per_behavior = json.loads((tmp_path / "selection.json").read_text())["per_behavior"]
        assert per_behavior and all(sum(t.values()) <= 3 for t in per_behavior.values())


# ---- the A-Tuning set: anchors plus the requested share of conversations ---------------------------------------

class ConversationPrompts:
    """The prompt builder's two calls the A-Tuning set makes, with token ids that say where they came from."""

    def __init__(self):
        self.response_limits = []

    def conversation_ids(self, messages, max_response_tokens):
        self.response_limits.append(max_response_tokens)
        return [1000 + messages[0]["id"]], [2000 + messages[0]["id"]]


def a_tuning_model(anchors):
    from types import SimpleNamespace

    from behaviorlm.data.samples import BehaviorVocab
    from behaviorlm.training import TrainExample

    vocab = BehaviorVocab(names=["Home", "Gym"], train_counts={"Home": 19, "Gym": 1}, categories={}, anchors=anchors)
    return SimpleNamespace(vocab=vocab, prompts=ConversationPrompts(), behavior_examples=lambda samples: [
        TrainExample((i,), (7,) if s.target == "Home" else (8,)) for i, s in enumerate(samples)])


def test_aux_count_is_the_share_of_the_whole_a_tuning_set_rounded():
    from behaviorlm.stages import aux_example_count

    # ratio r of the whole set: n_aux = r * n / (1 - r), rounded to the nearest count
    assert aux_example_count(95, 0.05) == 5 and aux_example_count(100, 0.2) == 25
    assert aux_example_count(30, 0.05) == 2  # 1.58 rounds up
    assert aux_example_count(7, 0.05) == 0  # 0.37 rounds down
    assert aux_example_count(0, 0.5) == 0 and aux_example_count(10, 0.0) == 0


def test_the_a_tuning_set_is_every_anchor_sample_then_seeded_conversations_at_the_requested_share():
    from behaviorlm.stages import a_tuning_set

    train = [Sample("u", pd.Timestamp("2024-01-01"), ("Gym",), ((0, 8),), t) for t in ["Home"] * 57 + ["Gym"] * 3]
    conversations = [[{"id": i, "role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
                     for i in range(40)]
    bm = a_tuning_model({"Home"})
    examples, report = a_tuning_set(bm, train, conversations, 0.05, 16, seed=3)
    behavior, aux = examples[:57], examples[57:]
    assert all(e.kind == "behavior" and e.answer_ids == (7,) for e in behavior)  # anchors only, Gym left out
    assert len(aux) == 3 and all(e.kind == "aux" for e in aux)  # round(0.05 * 57 / 0.95) = 3
    assert report == {"n_anchor_examples": 57, "n_aux_examples": 3, "aux_ratio_realised": 3 / 60}
    assert bm.prompts.response_limits == [16, 16, 16]  # long responses are cut where the config says
    picked = [e.prompt_ids[0] - 1000 for e in aux]
    assert [e.answer_ids[0] - 2000 for e in aux] == picked and len(set(picked)) == 3  # no repeats while enough
    again, _ = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.05, 16, seed=3)
    assert again == examples  # the same seed draws the same conversations
    other = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.05, 16, seed=4)[0][57:]
    assert [e.prompt_ids for e in other] != [e.prompt_ids for e in aux]
    # more conversations asked for than exist: drawn with replacement rather than failing
    few, report = a_tuning_set(a_tuning_model({"Home"}), train, conversations[:2], 0.5, 16, seed=0)
    assert report["n_aux_examples"] == 57 and {e.prompt_ids[0] for e in few[57:]} <= {1000, 1001}
    none, report = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.0, 16, seed=0)
    assert len(none) == 57 and report["aux_ratio_realised"] == 0.0
    one, _ = a_tuning_set(a_tuning_model({"Home"}), train[:19], conversations, 0.05, 16, seed=0)
    assert sum(e.kind == "aux" for e in one) == 1  # round(0.05 * 19 / 0.95) = 1
    # without replacement while there are enough: 24 of 40, and all 40 of 40, are all different conversations
    many, _ = a_tuning_set(a_tuning_model({"Home"}), train, conversations, 0.3, 16, seed=0)
    assert len(many) - 57 == 24 and len({e.prompt_ids for e in many[57:]}) == 24
    every, _ = a_tuning_set(a_tuning_model({"Home"}), train[:40], conversations, 0.5, 16, seed=0)
    assert sorted(e.prompt_ids[0] - 1000 for e in every[40:]) == list(range(40))


def test_role_counts_split_a_stages_targets_into_anchors_and_tail():
    from behaviorlm.stages import role_counts

    vocab = a_tuning_model({"Home"}).vocab
    samples = [Sample("u", pd.Timestamp("2024-01-01"), ("Gym",), ((0, 8),), t) for t in ["Home"] * 5 + ["Gym"] * 2]
    assert role_counts(samples, vocab) == {"n_anchor_targets": 5, "n_tail_targets": 2}


def test_a_tuning_stage_hands_train_lora_exactly_what_the_config_and_the_model_say(monkeypatch):
    from types import SimpleNamespace

    import torch
    from omegaconf import OmegaConf

    import behaviorlm.stages as stages

    received = []
    monkeypatch.setattr(stages, "train_lora", lambda model, examples, train_cfg, stage_cfg, **kwargs:
                        received.append({"train_cfg": train_cfg, "stage_cfg": stage_cfg, **kwargs}) or ["ok"])
    asked = []
    bm = SimpleNamespace(model="the model", tokenizer=SimpleNamespace(pad_token_id=7), device=torch.device("cpu"),
                         amp_dtype=torch.bfloat16, dist="the dist",
                         evaluate=lambda samples, k: asked.append((samples, k)) or ({"acc_tail": 0.25,
                                                                                     "acc_overall": 0.5}, None))
    stage_cfg = OmegaConf.create({"max_epochs": 3, "learning_rate": 2e-4, "patience": 4, "monitor": "acc_tail"})
    train_cfg = OmegaConf.create({"batch_size": 6, "grad_accum": 2, "weight_decay": 0.01, "warmup_ratio": 0.1,
                                  "max_grad_norm": 0.5, "max_steps_per_epoch": 9, "early_stopping": True,
                                  "attn_implementation": "auto", "compile": "always"})
    on_step = print
    result = stages.tune(bm, ["e"], stage_cfg, train_cfg, ["v"], seed=11, desc="a_tuning", on_step=on_step,
                         checkpoint_dir=Path("ckpt"), k=3)
    assert result == ["ok"]
    kwargs = received[-1]
    validate = kwargs.pop("validate")
    # the config's sections as they are (train_lora reads the settings it needs from them), and the model's facts
    assert kwargs.pop("train_cfg") is train_cfg and kwargs.pop("stage_cfg") is stage_cfg
    assert kwargs == {"pad_id": 7, "device": torch.device("cpu"), "amp_dtype": torch.bfloat16,
                      "seed": 11, "desc": "a_tuning", "on_step": on_step, "checkpoint_dir": Path("ckpt"),
                      "dist": "the dist", "objective": None}  # train_lora's answer-token default
    assert validate() == 0.25 and asked == [(["v"], 3)]  # the monitor (acc_tail) on the validation slice at k
    # no early stopping without the setting or without validation samples; a given objective is used as it is
    stages.tune(bm, ["e"], stage_cfg, OmegaConf.merge(train_cfg, {"early_stopping": False}), ["v"], 0, "b")
    assert received[-1]["validate"] is None
    stages.tune(bm, ["e"], stage_cfg, train_cfg, [], 0, "b", objective="balanced")
    assert received[-1]["validate"] is None and received[-1]["objective"] == "balanced"
    other = OmegaConf.merge(train_cfg, {"attn_implementation": "sdpa"})
    stages.tune(bm, ["e"], stage_cfg, other, [], 0, "b")
    assert received[-1]["train_cfg"] is other
