"""The beams (width, bounded, seeded) rank the top k as exact ranking does, batched or not, and pass the KV cache
under the installed transformers' name."""

import numpy as np
import pytest
import torch

from behaviorlm.prompts import PromptBuilder
from behaviorlm.scoring import CandidateScorer, CandidateTrie, beam_scores, naive_scores
from helpers import tiny_model_and_samples


def trap_model_and_candidates():
    """A random model and names built so that the likeliest first token is a trap: first tokens 10-12 only start
    three-token names (each later token costs about log 1/60), 13-15 start two-token names, 40-45 are unlikely."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=60, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    rng = np.random.default_rng(0)
    candidates = [[first, int(a), int(b)] for first in (10, 11, 12) for a, b in rng.integers(20, 60, (4, 2))]
    candidates += [[first, 1] for first in (13, 14, 15)]  # 1 ends a name, as an end-of-turn token does
    candidates += [[first, 1] for first in range(40, 46)]  # first tokens too unlikely to matter: the bound prunes
    prompts = [rng.integers(1, 60, rng.integers(5, 12)).tolist() for _ in range(24)]
    with torch.no_grad():  # trap tokens' logits about 1.5-3 (the others about 0): likeliest first, rarely best
        last = torch.stack([model.model(torch.tensor([p])).last_hidden_state[0, -1] for p in prompts]).mean(0)
        for row, logit in [*zip((10, 11, 12), (3.0, 2.0, 1.5)), *((r, -8.0) for r in range(40, 46))]:
            model.lm_head.weight[row] = logit * last / last.square().sum()
    return model, candidates, prompts


def test_exact_ranking_scores_every_name_beyond_the_beams_default_width():
    """Exact ranking is the beam with every name seeded: with 12 first tokens, more than the beam's default width
    10, it still scores every name, each as one forward per name would."""
    model, candidates, prompts = trap_model_and_candidates()
    scorer = CandidateScorer(model, candidates, 0, torch.device("cpu"), None, 4)
    assert len(scorer.trie.first_rows) == 12
    exact = scorer.score(prompts[:3])
    assert np.isfinite(exact).all()
    np.testing.assert_allclose(exact, naive_scores(model, prompts[:3], candidates, torch.device("cpu")), atol=1e-4)


@pytest.mark.parametrize("exact_top, batch_size", [(1, 1), (1, 4), (3, 4)])
def test_bounded_beam_ranks_the_top_k_exactly_even_when_greedy(exact_top, batch_size):
    model, candidates, prompts = trap_model_and_candidates()
    scorer = CandidateScorer(model, candidates, 0, torch.device("cpu"), None, 4)
    exact = scorer.score(prompts)
    assert np.isfinite(exact).all()  # exact ranking prunes nothing, though there are 12 first tokens
    plain = beam_scores(model, prompts, scorer.trie, torch.device("cpu"), None, width=1, batch_size=batch_size)
    bounded = beam_scores(model, prompts, scorer.trie, torch.device("cpu"), None, width=1, batch_size=batch_size,
                          exact_top=exact_top)
    top = np.argsort(-exact, axis=1)[:, :exact_top]
    # the plain beam keeps the LIKELIEST first token: its names are the ones under the argmax of a prompt forward
    with torch.no_grad():
        first = torch.stack([model(torch.tensor([p])).logits[0, -1] for p in prompts])
    firsts = sorted({c[0] for c in candidates})
    kept = [{candidates[j][0] for j in np.flatnonzero(np.isfinite(row))} for row in plain]
    assert all(len(tokens) == 1 for tokens in kept)
    best = first[:, firsts].max(1).values  # (ties between equally likely first tokens may go either way)
    assert torch.allclose(torch.stack([first[i, next(iter(k))] for i, k in enumerate(kept)]), best)
    # greedy on the first token alone misses the best name on some prompts; the bound never does
    assert (np.argsort(-plain, axis=1)[:, :exact_top] != top).any()
    np.testing.assert_array_equal(np.argsort(-bounded, axis=1, kind="stable")[:, :exact_top], top)
    found = np.isfinite(bounded)
    np.testing.assert_allclose(bounded[found], exact[found], atol=1e-4)  # every name it scored, scored exactly
    assert found.sum() < exact.size  # and it still pruned


@pytest.mark.parametrize("width", [1, 3])
def test_batched_beam_scores_equal_one_prompt_at_a_time(width):
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    prompts = [builder.sample_prompt_ids(s) for s in samples[:7]]  # different lengths: left padding in a batch
    assert len({len(p) for p in prompts}) > 1
    trie = CandidateTrie.build([builder.answer_ids(n) for n in names])
    one = beam_scores(model, prompts, trie, torch.device("cpu"), None, width=width)
    batched = beam_scores(model, prompts, trie, torch.device("cpu"), None, width=width, batch_size=4)
    assert (np.isfinite(one) == np.isfinite(batched)).all()  # the same names kept
    np.testing.assert_allclose(batched[np.isfinite(one)], one[np.isfinite(one)], atol=1e-4)


@pytest.mark.parametrize("exact_top, batch_size", [(1, 1), (1, 4), (3, 4)])
def test_seeded_beam_ranks_the_top_k_exactly_whatever_the_seed(exact_top, batch_size):
    """The seed's subtrees ride in the prompt's forward; a seed that misses the best names (none, or the worst
    name) costs the bound's extra round, never a wrong top k."""
    model, candidates, prompts = trap_model_and_candidates()
    cpu = torch.device("cpu")
    exact = CandidateScorer(model, candidates, 0, cpu, None, 4).score(prompts)
    trie = CandidateTrie.build(candidates)
    top = np.argsort(-exact, axis=1)[:, :exact_top]
    worst = np.argsort(exact, axis=1)[:, :1].tolist()
    for seed in ([[] for _ in prompts], worst, top.tolist()):
        seeded = beam_scores(model, prompts, trie, cpu, None, batch_size=batch_size, exact_top=exact_top, seed=seed)
        np.testing.assert_array_equal(np.argsort(-seeded, axis=1, kind="stable")[:, :exact_top], top)
        found = np.isfinite(seeded)
        np.testing.assert_allclose(seeded[found], exact[found], atol=1e-4)  # what it scored, it scored exactly
        for row, names in zip(found, seed):  # every name sharing a first token with a seeded name is scored
            firsts = {candidates[j][0] for j in names}
            assert all(row[j] for j, c in enumerate(candidates) if c[0] in firsts)
    # seeded with the answers, the extra round feeds exactly the first tokens whose log-probability beats the k-th
    # best seeded score: no more (the rest stay pruned), no fewer
    with torch.no_grad():
        first_logprobs = torch.stack([torch.log_softmax(model(torch.tensor([p])).logits[0, -1], -1) for p in prompts])
    for i, row in enumerate(found):
        firsts = {candidates[j][0] for j in top[i]}
        under_seed = [j for j, c in enumerate(candidates) if c[0] in firsts]
        bound = np.sort(exact[i, under_seed])[::-1][exact_top - 1]
        expected = [c[0] in firsts or first_logprobs[i, c[0]].item() > bound for c in candidates]
        assert row.tolist() == expected
    assert not found.all()
    with pytest.raises(ValueError, match=r"^beam seed: needs exact_top >= 1 \(got 0\) and one candidate list per "
                                         r"prompt \(got 24 for 24 prompts\)$"):
        beam_scores(model, prompts, trie, cpu, None, seed=top.tolist())
    with pytest.raises(ValueError, match=r"\(got 2 for 24 prompts\)$"):
        beam_scores(model, prompts, trie, cpu, None, exact_top=1, seed=top.tolist()[:2])


def test_every_kv_cache_forward_uses_the_installed_transformers_name_for_the_cache(recwarn):
    """transformers renamed the KV cache's argument and output field (`past_key_values` -> `cache`) and warns on
    every forward given the old name until 5.40 removes it; the width beam, the seeded beam and near-tie rescoring
    each pass a cache back in, and must use the installed name."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from behaviorlm.models import kv_cache_field

    assert kv_cache_field() in CausalLMOutputWithPast.__dataclass_fields__
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    prompts = [builder.sample_prompt_ids(s) for s in samples[:3]]
    trie = CandidateTrie.build([builder.answer_ids(n) for n in names])
    cpu = torch.device("cpu")
    width = beam_scores(model, prompts, trie, cpu, None, width=2, exact_top=1, near_tie_epsilon=50.0)
    seeded = beam_scores(model, prompts, trie, cpu, None, exact_top=1, seed=[[0]] * len(prompts),
                         near_tie_epsilon=50.0)
    assert np.isfinite(width).any(axis=1).all() and np.isfinite(seeded).any(axis=1).all()
    stale = [str(w.message) for w in recwarn if "past_key_values" in str(w.message)]
    assert not stale, stale[0]
