"""The trie ranking must equal summed token log-probabilities computed one candidate at a time."""

import numpy as np
import pytest
import torch

from behaviorlm.prompts import PromptBuilder
from behaviorlm.scoring import CandidateScorer, CandidateTrie, beam_scores, naive_scores, top_k_names
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
    with pytest.raises(ValueError, match=r"^two candidates have identical token sequences; they cannot be told "
                                         r"apart$"):
        CandidateTrie.build([[1, 2], [1, 2]])
    # names ending under one parent, and a one-token name, are told apart
    assert CandidateTrie.build([[1, 2], [1, 3], [4]]).n_nodes == 1  # only the shared 1 is fed
    scorer = CandidateScorer(None, [[1, 2], [1, 3]], 0, torch.device("cpu"), None)
    assert (scorer.batch_size, scorer.fp32_logits) == (4, True)  # the defaults: 4 prompts a pass, fp32 output layer


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


def test_one_pass_log_likelihoods_equal_one_forward_per_name_for_padded_prompts():
    """The balanced-softmax loss's differentiable scores (prompts and the whole trie in one masked pass): prompts of
    different lengths left-padded into one batch, each name's summed log-probability as a plain forward over that
    prompt and name alone gives it."""
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    prompts = [builder.sample_prompt_ids(s) for s in samples[:6]]
    assert len({len(p) for p in prompts}) > 1  # the batch is padded
    candidates = [builder.answer_ids(n) for n in names]
    scorer = CandidateScorer(model, candidates, tokenizer.pad_token_id, torch.device("cpu"), None, 6)
    scores = scorer.log_likelihoods(prompts)
    assert scores.requires_grad and scores.shape == (6, len(names))
    reference = naive_scores(model, prompts, candidates, torch.device("cpu"))
    np.testing.assert_allclose(scores.detach().numpy(), reference, atol=1e-4)
    # Under bf16 autocast with the output layer in fp32 (the CPU default) the one pass matches plain forwards in the
    # same precision to 6e-5 nats; a bf16 output layer is off by up to 0.23 and plain fp32 by up to 8e-4.
    def bf16_scores(fp32_logits: bool) -> np.ndarray:
        scorer = CandidateScorer(model, candidates, tokenizer.pad_token_id, torch.device("cpu"), torch.bfloat16, 6,
                                 fp32_logits=fp32_logits)
        return scorer.log_likelihoods(prompts).detach().numpy()

    same_precision = naive_scores(model, prompts, candidates, torch.device("cpu"), torch.bfloat16, fp32_logits=True)
    np.testing.assert_allclose(bf16_scores(fp32_logits=True), same_precision, rtol=0, atol=2e-4)
    assert np.abs(bf16_scores(fp32_logits=False) - same_precision).max() > 0.01  # fp32_logits=false rounds them


def test_top_k_names_ranks_best_first_breaks_ties_by_vocab_order_and_drops_pruned_names():
    # vocab order is most frequent first, so a tie goes to the more frequent behavior, on every numpy
    scores = np.array([[0.1, 0.5, -np.inf, 0.5, 0.3]])
    names = ["a", "b", "c", "d", "e"]
    assert top_k_names(scores, names, 3) == [["b", "d", "e"]]
    assert top_k_names(scores, names, 5) == [["b", "d", "e", "a"]]  # 'c' was pruned by the beam: never ranked
    # many ties over more names than an insertion sort handles: the order must still follow the vocab
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 4, size=(3, 200)).astype(float)
    many = [f"n{j}" for j in range(200)]
    expected = [[many[j] for j in sorted(range(200), key=lambda j: (-row[j], j))[:10]] for row in wide]
    assert top_k_names(wide, many, 10) == expected


def test_the_naive_reference_runs_in_the_precision_it_is_given():
    # bench compares the bf16 exact scorer with a bf16 reference: an fp32 reference would count bf16 rounding
    # as disagreement
    model, tokenizer, samples, names, _ = tiny_model_and_samples()
    builder = PromptBuilder(tokenizer)
    prompts = [builder.sample_prompt_ids(s) for s in samples[:2]]
    candidates = [builder.answer_ids(n) for n in names]
    cpu = torch.device("cpu")
    full = naive_scores(model, prompts, candidates, cpu)
    half = naive_scores(model, prompts, candidates, cpu, torch.bfloat16, fp32_logits=False)
    assert np.abs(half - full).max() > 1e-4  # bf16 rounding shows
    np.testing.assert_allclose(half, full, atol=0.25)  # but it is rounding, not another model
    for fp32_logits in (False, True):  # the exact scorer matches the reference in the same precision
        reference = naive_scores(model, prompts, candidates, cpu, torch.bfloat16, fp32_logits=fp32_logits)
        exact = CandidateScorer(model, candidates, tokenizer.pad_token_id, cpu, torch.bfloat16, 2,
                                fp32_logits=fp32_logits).score(prompts)
        np.testing.assert_allclose(exact, reference, atol=1e-3)
    # an fp32 output layer takes the largest rounding out: closer to the fp32 scores than an all-bf16 forward
    assert np.abs(reference - full).mean() < np.abs(half - full).mean()
    np.testing.assert_array_equal(naive_scores(model, prompts, candidates, cpu, torch.bfloat16), reference)  # default


def test_the_fp32_output_layer_computes_logits_in_fp32_under_autocast_and_is_removed_after():
    from behaviorlm.models import add_lora
    from behaviorlm.models import fp32_output_layer
    from omegaconf import OmegaConf
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True))
    model = add_lora(base, OmegaConf.create({"r": 4, "alpha": 8, "dropout": 0.0,
                                             "target_modules": ["q_proj", "v_proj"]})).eval()
    ids = torch.tensor([[5, 17, 42, 7]])
    head = model.get_output_embeddings()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1]
        plain = model(input_ids=ids).logits
        with fp32_output_layer(model):
            precise = model(input_ids=ids).logits
            assert head.weight is model.get_input_embeddings().weight  # still tied
        after = model(input_ids=ids).logits
    assert plain.dtype == torch.bfloat16 and precise.dtype == torch.float32
    torch.testing.assert_close(precise, hidden.float() @ head.weight.float().T, rtol=1e-5, atol=1e-5)
    assert (precise - plain.float()).abs().max() > 0  # bf16 logits are rounded
    assert after.dtype == torch.bfloat16 and "forward" not in vars(head)  # the patch is gone
    with fp32_output_layer(model, enabled=False), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(input_ids=ids).logits.dtype == torch.bfloat16
