"""Candidate scoring: rank every behavior name by its log-likelihood given the prompt.

The answer space is closed (the behavior vocabulary), so a prediction is a ranking, not free text. This module is
both the evaluator and the engine of difficulty selection.

Exact mode packs the candidates into a token trie and scores all of them in one forward per batch of prompts over
[prompt | every internal trie node], with a 4-D attention mask under which a node sees its prompt and its own
ancestors only, and position ids that continue the prompt's. The model therefore computes each shared prefix once,
and vocabulary logits are taken only at the rows whose next-token distribution is needed (the last prompt token and
the internal nodes); the end-token leaves are never fed. A candidate's score is the sum of its tokens'
log-probabilities, exactly as if each had been run separately (tests/test_scoring.py guards this).
`CandidateScorer.log_likelihoods` does the same pass differentiably (the balanced-softmax loss trains on it).

Beam mode (`beam_scores`, of which exact mode is the case that seeds every name) feeds only part of the trie: the
subtrees of the names in the user's own history in the same forward as the prompt (`seed`), or those of the
`width` most likely first answer tokens in a second forward; branch and bound (`exact_top`) adds whatever else can
still reach the top k.

Near-ties are decided canonically (`near_tie_epsilon`, behaviorlm/near_ties.py), so that exact and beam ranking
pick the same top-1 whatever their rounding.

Generate mode decodes greedily and counts an output as a prediction only if it is a behavior name exactly.

Both ranking modes compute the output projection in fp32 (`models.fp32_output_layer`, scoring.fp32_logits): under bf16 a
logit of magnitude 16-32 is rounded to 1/16-1/8 nat, enough to decide near-ties between names, so two bf16 paths
(exact and beam) would each pick their own winner where the names are closer than that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from behaviorlm.models import autocast, fp32_output_layer, kv_cache_field
from behaviorlm.near_ties import rescore_near_ties


def left_padded(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device):
    """The prompts right-aligned in one (batch, longest) tensor, built on the host and moved once (no copy per
    prompt), and which of its positions are real."""
    n = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), n), pad_id, dtype=torch.long)
    real = torch.zeros(len(prompts), n, dtype=torch.bool)
    for b, prompt in enumerate(prompts):
        ids[b, n - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
        real[b, n - len(prompt):] = True
    return ids.to(device), real.to(device)


def prompt_attention(real: torch.Tensor) -> torch.Tensor:
    """(batch, n, n) causal attention over each prompt's real tokens. A padding query must see something, or
    attention yields NaN; it sees only itself and is never read."""
    n = real.shape[1]
    mask = torch.tril(torch.ones(n, n, dtype=torch.bool, device=real.device))[None] & real[:, None, :]
    mask[:, torch.arange(n), torch.arange(n)] = True
    return mask


@dataclass
class CandidateTrie:
    """Candidates' token sequences merged by shared prefixes."""

    node_tokens: list[int]  # token of each internal node (fed to the model), in depth-first order
    node_depth: list[int]  # 1 for a first answer token
    ancestors: torch.Tensor  # (nodes, nodes) bool: column j is an ancestor of (or equal to) row i
    score_rows: torch.Tensor  # (candidates, max_len) row of the kept logits that predicts each token; 0 = prompt end
    score_tokens: torch.Tensor  # (candidates, max_len) the token predicted there
    score_mask: torch.Tensor  # (candidates, max_len) bool: real token, not padding
    # first answer token -> indices (into node_tokens, ascending) of the internal nodes beneath it (itself included)
    first_rows: dict[int, list[int]] = field(default_factory=dict)

    @classmethod
    def build(cls, sequences: Sequence[Sequence[int]]) -> "CandidateTrie":
        children: list[dict[int, int]] = [{}]  # node 0 is the root (the prompt's last position)
        parent, tokens, depth = [-1], [-1], [0]
        paths = []
        for seq in sequences:
            node, path = 0, []
            for token in seq:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(tokens)
                    children[node][token] = nxt
                    children.append({})
                    parent.append(node)
                    tokens.append(token)
                    depth.append(depth[node] + 1)
                path.append(nxt)
                node = nxt
            paths.append(path)
        ends = [p[-1] for p in paths]
        if len(set(ends)) != len(ends):
            raise ValueError("two candidates have identical token sequences; they cannot be told apart")
        # Internal nodes (with children) are fed to the model; row 0 of the kept logits is the prompt's end.
        internal = [n for n in range(1, len(tokens)) if children[n]]
        row_of = {0: 0}
        row_of.update({n: i + 1 for i, n in enumerate(internal)})
        ancestors = torch.zeros(len(internal), len(internal), dtype=torch.bool)
        for i, n in enumerate(internal):
            a = n
            while a != 0:
                ancestors[i, row_of[a] - 1] = True
                a = parent[a]
        max_len = max(len(p) for p in paths)
        rows = torch.zeros(len(paths), max_len, dtype=torch.long)
        toks = torch.zeros(len(paths), max_len, dtype=torch.long)
        mask = torch.zeros(len(paths), max_len, dtype=torch.bool)
        for c, path in enumerate(paths):
            for j, node in enumerate(path):
                rows[c, j] = row_of[parent[node]]
                toks[c, j] = tokens[node]
                mask[c, j] = True
        first_rows: dict[int, list[int]] = {}
        for i, n in enumerate(internal):
            top = n
            while depth[top] > 1:
                top = parent[top]
            first_rows.setdefault(tokens[top], []).append(i)
        return cls([tokens[n] for n in internal], [depth[n] for n in internal], ancestors, rows, toks, mask,
                   first_rows)

    @property
    def n_nodes(self) -> int:
        return len(self.node_tokens)


class CandidateScorer:
    """Scores prompts against a fixed candidate list. `score` returns (prompts, candidates) summed log-probs."""

    def __init__(self, model, candidate_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device,
                 amp_dtype: Optional[torch.dtype], batch_size: int = 4, fp32_logits: bool = True,
                 near_tie_epsilon: float = 0.0):
        self.model = model
        self.fp32_logits = fp32_logits
        self.near_tie_epsilon = near_tie_epsilon
        self.trie = CandidateTrie.build(candidate_ids)
        self.pad_id = pad_id
        self.device = device
        self.amp_dtype = amp_dtype
        self.batch_size = batch_size
        self._trie_tokens = torch.tensor(self.trie.node_tokens, dtype=torch.long, device=device)
        self._trie_depth = torch.tensor(self.trie.node_depth, dtype=torch.long, device=device)
        self._ancestors = self.trie.ancestors.to(device)
        self._rows = self.trie.score_rows.to(device)
        self._tokens = self.trie.score_tokens.to(device)
        self._mask = self.trie.score_mask.to(device)

    def _batch_inputs(self, prompts: Sequence[Sequence[int]]):
        """Left-padded prompts followed by the trie nodes, with positions and the 4-D tree mask."""
        prompt_ids, real = left_padded(prompts, self.pad_id, self.device)
        (batch, width), nodes = real.shape, self.trie.n_nodes
        total = width + nodes
        ids = torch.cat([prompt_ids, self._trie_tokens.expand(batch, -1)], 1)
        positions = torch.cat([(real.cumsum(1) - 1).clamp(min=0),
                               (real.sum(1, keepdim=True) - 1) + self._trie_depth[None, :]], 1)
        mask = torch.zeros(batch, 1, total, total, dtype=torch.bool, device=self.device)
        mask[:, 0, :width, :width] = prompt_attention(real)
        mask[:, 0, width:, :width] = real[:, None, :]
        mask[:, 0, width:, width:] = self._ancestors[None]
        return ids, positions, mask

    def log_likelihoods(self, prompts: Sequence[Sequence[int]], model=None) -> torch.Tensor:
        """(prompts, candidates) summed log-probabilities, differentiable (the balanced-softmax loss trains on
        them); `model` may be a wrapped copy of the scorer's own (DDP)."""
        ids, positions, mask = self._batch_inputs(prompts)
        with fp32_output_layer(self.model, self.fp32_logits), autocast(self.device, self.amp_dtype):
            logits = (model or self.model)(input_ids=ids, attention_mask=mask, position_ids=positions,
                                           logits_to_keep=self.trie.n_nodes + 1, use_cache=False).logits
        logprobs = torch.log_softmax(logits.float(), dim=-1)  # (batch, 1 + nodes, vocab)
        picked = logprobs[:, self._rows, self._tokens]  # (batch, candidates, max_len)
        return (picked * self._mask).sum(-1)

    def score(self, prompts: Sequence[Sequence[int]], progress: Optional[str] = None) -> np.ndarray:
        """Every name's summed log-probability: the seeded beam's one forward over [prompt | trie] with every name
        seeded. Under bf16 two computation paths round differently (a two-forward exact ranking, prompt then
        nodes over its KV cache, differs from this one by up to 0.45 nat and picks another top-1 on 1.7% of tuned
        NYC prompts); sharing the seeded beam's path keeps the beam's top-1 the exact ranking's
        (results/bench.json beam_top1_agreement)."""
        everything = list(range(self.trie.score_rows.shape[0]))
        return beam_scores(self.model, prompts, self.trie, self.device, self.amp_dtype, progress=progress,
                           batch_size=self.batch_size, exact_top=1, fp32_logits=self.fp32_logits,
                           seed=[everything] * len(prompts), near_tie_epsilon=self.near_tie_epsilon)


def top_k_names(scores: np.ndarray, names: Sequence[str], k: int) -> list[list[str]]:
    """Each row's k best names, best first; a -inf score (a name the beam pruned) is never ranked."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[names[j] for j in row if np.isfinite(scores[i, j])] for i, row in enumerate(top)]


@torch.no_grad()
def beam_scores(model, prompts: Sequence[Sequence[int]], trie: CandidateTrie, device: torch.device,
                amp_dtype: Optional[torch.dtype], width: int = 10, progress: Optional[str] = None,
                batch_size: int = 1, exact_top: int = 0, fp32_logits: bool = True,
                seed: Optional[Sequence[Sequence[int]]] = None, near_tie_epsilon: float = 0.0) -> np.ndarray:
    """Beam over the first answer token, exact below it: (prompts, candidates) scores, -inf where pruned.

    Two forwards per batch of prompts: the prompts alone (left-padded, keeping their KV cache), which rank the
    names' first tokens; then one trie-masked forward over just the internal nodes under each prompt's `width` best
    first tokens, attending to its cached prompt (prompts whose kept subtrees are smaller get padding nodes that see
    only themselves). Every name under a kept first token gets its exact summed log-probability; a name is pruned
    only when its first token is outside the top `width` (most names are one or two tokens, so that is where a
    beam's choices are made). Width 1 is greedy on the first token: never an invalid output. Batching changes
    nothing but speed (one prompt a time costs Python and kernel launches, which dominate on a GPU).

    `exact_top` = k >= 1 makes the top k of the ranking exact (branch and bound): a name can score no more than its
    first token's log-probability, so only first tokens above the k-th best score found can hold a better name;
    their subtrees get one more trie-masked forward over the same cached prompt. One extra round suffices (the
    bound only rises), and it is needed only where a pruned first token is close to the best names.

    `seed` (candidate indices per prompt, e.g. the behaviors in the user's history) replaces the second forward:
    the subtrees of the seed names' first tokens ride in the prompt's own forward (one forward instead of two; on
    a CPU a forward's fixed cost, streaming every weight once, is half a prompt's), and `width` is not used. The
    bound then decides whether anything outside the seed can rank in the top k, so a seed needs `exact_top` >= 1:
    a poor seed costs the extra round, never a wrong top k.

    `fp32_logits`: the output projection in fp32, as the exact scorer's (`fp32_output_layer`).

    `near_tie_epsilon` > 0 (with `exact_top` >= 1): the bound also scores every name that could lie within epsilon
    of the best, and the names within epsilon of each prompt's best are rescored by `canonical_scores`.
    """
    if seed is not None and (exact_top < 1 or len(seed) != len(prompts)):
        raise ValueError(f"beam seed: needs exact_top >= 1 (got {exact_top}) and one candidate list per prompt "
                         f"(got {len(seed)} for {len(prompts)} prompts)")
    was_training = model.training
    model.eval()
    out = np.full((len(prompts), trie.score_rows.shape[0]), -np.inf, dtype=np.float32)
    first = list(trie.first_rows)
    first_index = {token: k for k, token in enumerate(first)}
    first_of_candidate = [first_index[int(t)] for t in trie.score_tokens[:, 0]]
    first_tokens = torch.tensor(first, device=device)
    depth = torch.tensor(trie.node_depth, device=device)
    node_tokens = torch.tensor(trie.node_tokens, device=device)
    ancestors = trie.ancestors.to(device)
    trie_rows, trie_tokens, trie_mask = (t.to(device) for t in (trie.score_rows, trie.score_tokens, trie.score_mask))
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: less padding
    bar = tqdm(total=len(prompts), desc=progress, disable=progress is None, leave=False, mininterval=2.0)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, real = left_padded([prompts[i] for i in chunk], 0, device)
        batch, n = real.shape
        positions = (real.cumsum(1) - 1).clamp(min=0)

        def subtrees(keep_rows: list[list[int]]):
            """The internal nodes under each prompt's kept first tokens (indices into `first`), padded to one span:
            their trie rows, which are real, their tokens, positions and (batch, span, n + span) attention mask (a
            node sees its real prompt tokens and its kept ancestors; a padding node sees itself, is never read)."""
            kept = [sorted(r for k in row for r in trie.first_rows[first[k]]) for row in keep_rows]
            span = max(1, max(len(rows) for rows in kept))
            rows = torch.zeros(batch, span, dtype=torch.long)
            valid = torch.zeros(batch, span, dtype=torch.bool)
            for b, r in enumerate(kept):
                rows[b, :len(r)], valid[b, :len(r)] = torch.tensor(r, dtype=torch.long), True
            rows, valid = rows.to(device), valid.to(device)
            mask = torch.zeros(batch, span, n + span, dtype=torch.bool, device=device)
            mask[:, :, :n] = real[:, None, :] & valid[:, :, None]
            mask[:, :, n:] = ancestors[rows[:, :, None], rows[:, None, :]] & valid[:, :, None] & valid[:, None, :]
            mask[:, torch.arange(span), n + torch.arange(span)] = True
            node_positions = (real.sum(1, keepdim=True) - 1) + depth[rows]
            return kept, rows, valid, node_tokens[rows], node_positions, mask

        def write_scores(first_logprobs, node_logits, kept, rows, valid) -> None:
            """Every name reached by the kept nodes gets its summed log-probability in `out`. All prompts of the
            batch at once (one copy to the host, not one per prompt: on a GPU the per-prompt syncs, not the
            forwards, set the pace). Table rows per prompt: 0 = the prompt's end, j + 1 = its j-th kept node;
            `remap` maps the trie's rows onto them (-1: not kept)."""
            node_logits = node_logits.float()
            # log-probabilities of the picked tokens only: logit - logsumexp (a full log_softmax table, and a copy
            # of it joined to the prompt's row, cost a third of a batch of 8 exact rankings)
            normaliser = torch.logsumexp(node_logits, dim=-1)  # (batch, span)
            span = rows.shape[1]
            remap = torch.full((batch, trie.n_nodes + 1), -1, dtype=torch.long, device=device)
            slots = torch.arange(1, span + 1, device=device).expand(batch, -1)
            remap.scatter_(1, torch.where(valid, rows + 1, 0), torch.where(valid, slots, 0))
            remap[:, 0] = 0
            score_rows = remap[:, trie_rows]  # (batch, candidates, max_len)
            reached = ((score_rows >= 0) | ~trie_mask).all(-1).cpu().numpy()
            prompt_ = torch.arange(batch, device=device)[:, None, None]
            node = (score_rows - 1).clamp(min=0)  # its row among the kept nodes (0 where the prompt's end predicts)
            picked = torch.where(score_rows == 0, first_logprobs[prompt_, trie_tokens],
                                 node_logits[prompt_, node, trie_tokens] - normaliser[prompt_, node])
            scores = (picked * trie_mask).sum(-1).cpu().numpy()
            for b, i in enumerate(chunk):
                if kept[b]:
                    out[i, reached[b]] = scores[b, reached[b]]

        def score_subtrees(keep_rows: list[list[int]], cache, first_logprobs) -> None:
            """One trie-masked forward over the kept subtrees, attending to the cached prompts; the cache holds the
            prompts alone again afterwards, for another round."""
            kept, rows, valid, tokens, node_positions, mask = subtrees(keep_rows)
            with fp32_output_layer(model, fp32_logits), autocast(device, amp_dtype):
                logits = model(input_ids=tokens, attention_mask=mask[:, None], position_ids=node_positions,
                               use_cache=True, **{kv_cache_field(): cache}).logits
            cache.crop(-rows.shape[1])
            write_scores(first_logprobs, logits, kept, rows, valid)

        if seed is None:  # the prompts alone, then the subtrees of their `width` best first tokens
            with fp32_output_layer(model, fp32_logits), autocast(device, amp_dtype):
                step = model(input_ids=ids, attention_mask=real.long(), position_ids=positions, use_cache=True,
                             logits_to_keep=1)
            cache = getattr(step, kv_cache_field())
            first_logprobs = torch.log_softmax(step.logits[:, -1].float(), dim=-1)  # (batch, vocab)
            keep = torch.topk(first_logprobs[:, first_tokens], min(width, len(first)), dim=1).indices.tolist()
            score_subtrees(keep, cache, first_logprobs)
        else:  # one forward over [prompt | the seed's subtrees]: the prompt's end and every node keep their logits
            keep = [sorted({first_of_candidate[c] for c in seed[i]}) for i in chunk]
            kept, rows, valid, tokens, node_positions, node_mask = subtrees(keep)
            span = rows.shape[1]
            mask = torch.zeros(batch, 1, n + span, n + span, dtype=torch.bool, device=device)
            mask[:, 0, :n, :n] = prompt_attention(real)
            mask[:, 0, n:] = node_mask
            with fp32_output_layer(model, fp32_logits), autocast(device, amp_dtype):
                step = model(input_ids=torch.cat([ids, tokens], 1), attention_mask=mask,
                             position_ids=torch.cat([positions, node_positions], 1), use_cache=True,
                             logits_to_keep=span + 1)
            cache = getattr(step, kv_cache_field())
            cache.crop(-span)
            first_logprobs = torch.log_softmax(step.logits[:, 0].float(), dim=-1)
            write_scores(first_logprobs, step.logits[:, 1:], kept, rows, valid)
        if exact_top:
            host_candidates = first_logprobs[:, first_tokens].cpu()
            extra = []
            for b, i in enumerate(chunk):
                found = np.sort(out[i][np.isfinite(out[i])])[::-1]
                bound = found[min(exact_top, len(found)) - 1] if len(found) else -np.inf
                # with near-tie rescoring, a name just below the best must be found too, or it cannot compete
                above = (host_candidates[b] > float(bound) - near_tie_epsilon).nonzero().flatten().tolist()
                extra.append([k for k in above if k not in set(keep[b])])
            if any(extra):
                score_subtrees(extra, cache, first_logprobs)
        if near_tie_epsilon > 0 and exact_top:
            rescore_near_ties(model, prompts, out, trie, device, amp_dtype, fp32_logits, near_tie_epsilon, chunk)
        bar.update(batch)
    bar.close()
    model.train(was_training)
    return out


def naive_scores(model, prompts: Sequence[Sequence[int]], candidate_ids: Sequence[Sequence[int]],
                 device: torch.device, amp_dtype: Optional[torch.dtype] = None,
                 fp32_logits: bool = True) -> np.ndarray:
    """Reference: one full forward per (prompt, candidate), summing the candidate tokens' log-probabilities
    (float64 sums, so that the reference adds no rounding of its own)."""
    out = np.empty((len(prompts), len(candidate_ids)))
    with torch.no_grad():
        for i, prompt in enumerate(prompts):
            for c, cand in enumerate(candidate_ids):
                ids = torch.tensor([list(prompt) + list(cand)], device=device)
                with fp32_output_layer(model, fp32_logits), autocast(device, amp_dtype):
                    logits = model(input_ids=ids).logits[0].float()
                logprobs = torch.log_softmax(logits[len(prompt) - 1:-1], dim=-1)
                out[i, c] = logprobs.gather(1, ids[0, len(prompt):, None]).sum().item()
    return out


@torch.no_grad()
def generate_predictions(model, tokenizer, prompts: Sequence[Sequence[int]], names: Sequence[str],
                         device: torch.device, amp_dtype: Optional[torch.dtype], max_new_tokens: int,
                         batch_size: int = 8, progress: Optional[str] = None,
                         normalize: Callable[[str], str] = str.strip) -> list[Optional[str]]:
    """Greedy free generation; an output that is not exactly a behavior name is an invalid prediction (None)."""
    known = {normalize(n): n for n in names}
    predictions: list[Optional[str]] = []
    pad = tokenizer.pad_token_id
    for start in tqdm(range(0, len(prompts), batch_size), desc=progress, disable=progress is None, leave=False):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long, device=device)
        attention = torch.zeros_like(ids)
        for b, prompt in enumerate(chunk):
            ids[b, width - len(prompt):] = torch.tensor(prompt, device=device)
            attention[b, width - len(prompt):] = 1
        with autocast(device, amp_dtype):
            generated = model.generate(input_ids=ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                                       do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
        for row in generated[:, width:]:
            text = tokenizer.decode(row, skip_special_tokens=True)
            predictions.append(known.get(normalize(text)))
    return predictions
