"""A BehaviorModel scores with the mode it was built with and turns scores into rankings, on one process or a
rank of many."""

import dataclasses

import numpy as np
import torch

from behaviorlm.distributed import LOCAL, Dist
from behaviorlm.prompts import PromptBuilder
from helpers import tiny_model_and_samples


class RecordingDist:
    """One process standing in for a rank of many: its shard is every sample, and it records the counts it is
    asked to gather back."""
    is_main = True

    def __init__(self):
        self.gathered = []

    def shard(self, items):
        return list(items)

    def gather(self, local, n):
        self.gathered.append(n)
        return list(local)

    def gather_rows(self, local, n):
        self.gathered.append(n)
        return local


def scoring(**settings):
    """The config's `scoring` section with `settings` over its defaults."""
    from omegaconf import OmegaConf

    from behaviorlm.config import ScoringConfig

    return OmegaConf.merge(OmegaConf.structured(ScoringConfig), settings)


def test_a_behavior_model_scores_with_the_mode_it_was_built_with(monkeypatch):
    from behaviorlm.data.samples import BehaviorVocab
    from behaviorlm.behavior_model import BehaviorModel

    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    vocab = BehaviorVocab(names=names, train_counts={n: 1 for n in names})
    cpu = torch.device("cpu")

    def scores(mode, width=1):
        bm = BehaviorModel.build(model, tokenizer, PromptBuilder(tokenizer), vocab, cpu, None,
                                 scoring(batch_size=2, mode=mode, beam_width=width, beam_exact_top=0, beam_seed="none"))
        return bm.scores(samples[:4])

    exact = scores("exact")
    assert exact.shape == (4, len(names)) and np.isfinite(exact).all()  # every name ranked
    greedy = scores("beam", width=1)
    assert (~np.isfinite(greedy)).any(axis=1).all()  # one first token kept: the rest pruned on every row
    np.testing.assert_allclose(greedy[np.isfinite(greedy)], exact[np.isfinite(greedy)], atol=1e-4)
    # beam mode hands the beam every setting the model was built with (a recording beam stands in)
    seen = []

    def recording_beam(model_, prompts, trie, device, amp_dtype, **settings):
        seen.append((len(prompts), device, amp_dtype, settings))
        return np.zeros((len(prompts), len(names)), dtype=np.float32)

    monkeypatch.setattr("behaviorlm.behavior_model.beam_scores", recording_beam)
    default = BehaviorModel.build(model, tokenizer, PromptBuilder(tokenizer), vocab, cpu, None, scoring())
    assert (default.scoring_mode, default.beam_width, default.dist, default.beam_exact_top, default.fp32_logits,
            default.scorer.fp32_logits, default.beam_seed, default.near_tie_epsilon) == (
        "exact", 10, LOCAL, 1, True, True, "history", 0.1)  # the config's defaults
    two_ranks = Dist(rank=0, world=2)
    bm = BehaviorModel.build(model, tokenizer, PromptBuilder(tokenizer), vocab, cpu, torch.bfloat16,
                             scoring(batch_size=3, mode="beam", beam_width=7, beam_exact_top=2, fp32_logits=False,
                                     beam_seed="history", near_tie_epsilon=0.25), dist=two_ranks)
    assert (bm.device, bm.amp_dtype, bm.dist, bm.beam_exact_top, bm.fp32_logits, bm.beam_seed) == (
        cpu, torch.bfloat16, two_ranks, 2, False, "history")
    assert (bm.scorer.device, bm.scorer.amp_dtype, bm.scorer.batch_size, bm.scorer.fp32_logits,
            bm.scorer.near_tie_epsilon) == (cpu, torch.bfloat16, 3, False, 0.25)
    bm.dist = LOCAL
    # the seed: each sample's own history, as candidate indices (a name outside the vocabulary is skipped)
    unknown = dataclasses.replace(samples[3], history=("a place not in the vocabulary", names[0]))
    assert bm.scores([*samples[:3], unknown], progress="scoring test").shape == (4, len(names))
    history = [sorted({names.index(h) for h in s.history}) for s in samples[:3]] + [[0]]
    assert all(history) and history[0] != [0]
    assert seen == [(4, cpu, torch.bfloat16, {"width": 7, "progress": "scoring test", "batch_size": 3,
                                              "exact_top": 2, "fp32_logits": False, "seed": history,
                                              "near_tie_epsilon": 0.25})]
    bm.beam_seed = "none"
    bm.scores([*samples[:3], unknown], progress="scoring test")
    assert seen[1][3]["seed"] is None
    del seen[1]
    # exact mode: the scorer gets this rank's prompts and the progress label; the gather every sample's count
    bm.scoring_mode, bm.dist = "exact", RecordingDist()
    monkeypatch.setattr(bm.scorer, "score", lambda prompts, progress=None: seen.append((len(prompts), progress))
                        or np.zeros((len(prompts), len(names))))
    bm.scores(samples[:4], progress="exact test")
    assert seen[1:] == [(4, "exact test")] and bm.dist.gathered == [4]


def test_rankings_are_the_top_k_by_score_shifted_by_the_offset_and_one_valid_name_or_none_when_generating(
        monkeypatch):
    from behaviorlm.data.samples import BehaviorVocab
    from behaviorlm.behavior_model import BehaviorModel

    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    vocab = BehaviorVocab(names=names, train_counts={n: 1 for n in names})
    bm = BehaviorModel.build(model, tokenizer, PromptBuilder(tokenizer), vocab, torch.device("cpu"), None,
                             scoring(batch_size=2))
    scores = bm.scores(samples[:4])
    expected = [[names[j] for j in sorted(range(len(names)), key=lambda j: -row[j])[:3]] for row in scores]
    assert bm.rankings(samples[:4], k=3) == expected
    bm.score_offset = np.zeros(len(names))
    bm.score_offset[-1] = 100.0  # post-hoc logit adjustment: the last name now wins every ranking
    assert all(row[0] == names[-1] and row[1:] == ranked[:2] for row, ranked in
               zip(bm.rankings(samples[:4], k=3), [[n for n in r if n != names[-1]] for r in expected]))
    metrics, _ = bm.evaluate(samples[:4], k=2)  # acc@k at the k asked for, over the same rankings
    top2 = [r[:2] for r in bm.rankings(samples[:4], k=2)]
    assert metrics["acc_at_2"] == np.mean([s.target in r for s, r in zip(samples[:4], top2)])
    assert "acc_at_5" not in metrics
    bm.score_offset, bm.scoring_mode = None, "generate"
    generated = bm.rankings(samples[:4], k=3)
    assert len(generated) == 4 and all(len(row) <= 1 and set(row) <= set(names) for row in generated)
    # What the generate branch hands its generator and its gather (a random tiny model's generations are rarely
    # valid names, so a recording generator stands in): a token budget of the longest name, the autocast dtype,
    # this rank's shard; every sample's answer back in order, a name as a one-name ranking, None as none.
    calls = []

    def fake_generate(model, tokenizer, prompts, names_, device, amp_dtype, max_new_tokens, progress=None):
        calls.append((len(prompts), amp_dtype, max_new_tokens))
        return [names_[0], None, names_[2], None][:len(prompts)]

    monkeypatch.setattr("behaviorlm.behavior_model.generate_predictions", fake_generate)
    bm.dist, bm.amp_dtype = RecordingDist(), torch.bfloat16
    assert bm.rankings(samples[:4], k=3) == [[names[0]], [], [names[2]], []]
    longest = max(len(PromptBuilder(tokenizer).answer_ids(n)) for n in names)
    assert calls == [(4, torch.bfloat16, longest)] and bm.dist.gathered == [4]
