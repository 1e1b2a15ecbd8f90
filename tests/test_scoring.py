"""The trie ranking must equal summed token log-probabilities computed one candidate at a time."""

import numpy as np
import pytest
import torch

from behaviorlm.prompts import PromptBuilder
from behaviorlm.scoring import CandidateScorer, CandidateTrie, beam_scores, naive_scores
from helpers import tiny_model_and_samples


@pytest.mark.parametrize("batch_size", [1, 3])
def test_trie_scores_equal_direct_sums(batch_size):
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    prompts = [builder.sample_prompt_ids(s) for s in samples[:5]]  # different lengths: padding is exercised
    assert len({len(p) for p in prompts}) > 1
    candidates = [builder.answer_ids(n) for n in names]
    scorer = CandidateScorer(model, candidates, tokenizer.pad_token_id, torch.device("cpu"), None, batch_size)
    fast = scorer.score(prompts)
    reference = naive_scores(model, prompts, candidates, torch.device("cpu"))
    np.testing.assert_allclose(fast, reference, atol=1e-4)
    assert (np.argsort(-fast, axis=1) == np.argsort(-reference, axis=1)).all()


def test_trie_shares_prefixes_and_feeds_no_leaf():
    trie = CandidateTrie.build([[5, 6, 9], [5, 7, 9], [8, 9]])
    # internal nodes: 5, 6, 7, 8 (the end token 9 is never fed)
    assert sorted(trie.node_tokens) == [5, 6, 7, 8]
    assert trie.n_nodes == 4
    assert trie.score_mask.sum().item() == 8
    with pytest.raises(ValueError, match="identical"):
        CandidateTrie.build([[1, 2], [1, 2]])


def test_beam_search_is_exact_when_wide_and_never_invalid_when_greedy():
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    prompts = [builder.sample_prompt_ids(s) for s in samples[:6]]
    scorer = CandidateScorer(model, [builder.answer_ids(n) for n in names], tokenizer.pad_token_id,
                             torch.device("cpu"), None, 4)
    exact = scorer.score(prompts)
    full = beam_scores(model, prompts, scorer.trie, torch.device("cpu"), None, width=len(names))
    np.testing.assert_allclose(full, exact, atol=1e-4)  # an unpruned beam finds every name with its exact score
    greedy = beam_scores(model, prompts, scorer.trie, torch.device("cpu"), None, width=1)
    found = np.isfinite(greedy)
    assert found.any(axis=1).all()  # always a valid behavior name
    first_token = [builder.answer_ids(n)[0] for n in names]
    for row in found:  # width 1 keeps one first token and scores every name under it
        kept = {first_token[j] for j in np.flatnonzero(row)}
        assert len(kept) == 1 and row.sum() == first_token.count(kept.pop())
    np.testing.assert_allclose(greedy[found], exact[found], atol=1e-4)


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


@pytest.mark.parametrize("exact_top, batch_size", [(1, 1), (1, 4), (3, 4)])
def test_bounded_beam_ranks_the_top_k_exactly_even_when_greedy(exact_top, batch_size):
    model, candidates, prompts = trap_model_and_candidates()
    scorer = CandidateScorer(model, candidates, 0, torch.device("cpu"), None, 4)
    exact = scorer.score(prompts)
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
