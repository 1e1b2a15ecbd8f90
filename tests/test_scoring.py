"""The trie ranking must equal summed token log-probabilities computed one candidate at a time."""

import dataclasses

import numpy as np
import pytest
import torch

from behaviorlm.distributed import LOCAL, Dist
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
