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
