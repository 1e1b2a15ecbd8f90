"""Near-ties decided alike by exact ranking and the beam (behaviorlm/near_ties.py): the canonical scores are the
names' log-likelihoods, and with near-tie rescoring the two paths pick the same top-1 where their rounding differs."""

import numpy as np
import torch

from behaviorlm.near_ties import canonical_scores
from behaviorlm.prompts import PromptBuilder
from behaviorlm.scoring import CandidateScorer, CandidateTrie, beam_scores, naive_scores
from helpers import tiny_model_and_samples


def test_canonical_scores_equal_one_forward_per_name():
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    candidates = [builder.answer_ids(n) for n in names]
    trie = CandidateTrie.build(candidates)
    prompt = builder.sample_prompt_ids(samples[0])
    chosen = [0, 3, len(names) - 1]
    reference = naive_scores(model, [prompt], [candidates[j] for j in chosen], torch.device("cpu"))[0]
    canonical = canonical_scores(model, prompt, chosen, trie, torch.device("cpu"), None)
    np.testing.assert_allclose(canonical, reference, atol=1e-4)


def test_near_ties_are_decided_alike_by_beam_and_exact_ranking_under_bf16():
    """Names built to tie (a random model: 30 two-token and 12 three-token names within a few nats), ranked with
    bf16 logits of magnitude about 10, which round to 1/16 nat: the exact and the beam paths round differently by
    up to a tenth of a nat, more than the gap between the two best names of many prompts. With near_tie_epsilon
    every name within it of the best is rescored canonically, so both paths pick the same top-1 on every prompt."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(20.0)  # logits of magnitude 10: bf16 keeps 1/16 nat of them
    rng = np.random.default_rng(1)
    candidates = [[first, 1] for first in range(10, 40)]  # 1 ends a name, as an end-of-turn token does
    candidates += [[first, int(a), 1] for first in (40, 41, 42) for a in rng.choice(np.arange(43, 60), 4, False)]
    prompts = [rng.integers(2, 60, rng.integers(6, 14)).tolist() for _ in range(200)]
    trie = CandidateTrie.build(candidates)
    cpu, bf16, epsilon = torch.device("cpu"), torch.bfloat16, 0.3
    seeds = {"history": [sorted(rng.choice(len(candidates), 3, replace=False).tolist()) for _ in prompts],
             "width": None}

    def rank(eps):
        exact = CandidateScorer(model, candidates, 0, cpu, bf16, 4, fp32_logits=False,
                                near_tie_epsilon=eps).score(prompts)
        beams = {name: beam_scores(model, prompts, trie, cpu, bf16, width=3, batch_size=3, exact_top=1, seed=seed,
                                   fp32_logits=False, near_tie_epsilon=eps) for name, seed in seeds.items()}
        return exact, beams

    plain_exact, plain_beams = rank(0.0)
    gap = max(np.abs(plain_exact - beam)[np.isfinite(beam)].max() for beam in plain_beams.values())
    ordered = np.sort(plain_exact, axis=1)
    assert 0.02 < gap < epsilon / 2  # the paths differ, and by less than half of epsilon
    assert ((ordered[:, -1] - ordered[:, -2]) < gap).sum() >= 5  # prompts whose best two the paths could swap
    exact, beams = rank(epsilon)
    for name, beam in beams.items():
        np.testing.assert_array_equal(beam.argmax(1), exact.argmax(1), err_msg=name)
        tied = [i for i in range(len(prompts)) if (exact[i] >= exact[i].max() - epsilon).sum() > 1]
        assert len(tied) >= 5 and all(beam[i].max() == exact[i].max() for i in tied)  # the same canonical score
