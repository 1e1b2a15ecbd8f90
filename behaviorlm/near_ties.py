"""Near-ties decided alike by every ranking path (scoring.near_tie_epsilon).

Exact ranking and the beam (behaviorlm/scoring.py) run matrices of different shapes, which under bf16 round
differently (up to 0.08 nat seen on an AMX Xeon), so each path could pick its own winner between names closer than
that. Every name within epsilon of a prompt's best is therefore rescored by `canonical_scores`, a computation that
depends on the prompt and the name alone, whichever path found them: the top-1 of beam and exact ranking is then
the same by construction whenever epsilon exceeds twice the paths' gap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

from behaviorlm.models import autocast, fp32_output_layer, kv_cache_field

if TYPE_CHECKING:
    from behaviorlm.scoring import CandidateTrie


def rescore_near_ties(model, prompts: Sequence[Sequence[int]], scores: np.ndarray, trie: CandidateTrie,
                      device: torch.device, amp_dtype: Optional[torch.dtype], fp32_logits: bool, epsilon: float,
                      rows: Optional[Sequence[int]] = None) -> int:
    """In place: in each row of `scores` (those in `rows`, default all), the names within `epsilon` of the row's best
    get their `canonical_scores`. Returns how many rows had such a near-tie."""
    tied = 0
    for i in range(len(prompts)) if rows is None else rows:
        contenders = np.flatnonzero(scores[i] >= scores[i].max() - epsilon)
        if len(contenders) > 1:
            scores[i, contenders] = canonical_scores(model, prompts[i], contenders, trie, device, amp_dtype,
                                                     fp32_logits)
            tied += 1
    return tied


CANONICAL_ROWS = 8  # names rescored per forward; every such forward has the same shape, whatever the names


@torch.no_grad()
def canonical_scores(model, prompt: Sequence[int], candidates: Sequence[int], trie: CandidateTrie,
                     device: torch.device, amp_dtype: Optional[torch.dtype], fp32_logits: bool = True) -> np.ndarray:
    """The summed log-probabilities of `candidates` (indices into the trie's names) after `prompt`, computed in a way
    that depends on the prompt and each name alone: the prompt by itself (batch 1, no padding, no trie nodes), then
    the names' tokens over copies of its cache, CANONICAL_ROWS names a forward, each padded at its end to the
    trie's depth (a causal row never sees what follows it) and a short last group filled with repeats, so every
    forward has one shape and a name's row is computed alike whichever names share it. Whatever path or batch
    asked, the arithmetic is the same, so the near-ties it decides are decided alike everywhere
    (`beam_scores`' near_tie_epsilon)."""
    n = len(prompt)
    with fp32_output_layer(model, fp32_logits), autocast(device, amp_dtype):
        step = model(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True, logits_to_keep=1)
    cache = getattr(step, kv_cache_field())
    first = torch.log_softmax(step.logits[0, -1].float(), dim=-1)
    depth = trie.score_tokens.shape[1] - 1  # tokens fed per name: all but its last
    scores = np.empty(len(candidates), dtype=np.float32)
    if depth == 0:
        for slot, c in enumerate(candidates):
            scores[slot] = float(first[trie.score_tokens[c, 0]])
        return scores
    cache.batch_repeat_interleave(CANONICAL_ROWS)
    positions = torch.arange(n, n + depth, device=device).expand(CANONICAL_ROWS, -1)
    for start in range(0, len(candidates), CANONICAL_ROWS):
        group = list(candidates[start:start + CANONICAL_ROWS])
        rows = group + [group[0]] * (CANONICAL_ROWS - len(group))
        tokens = trie.score_tokens[rows].to(device)  # (rows, depth + 1), padded past each name's end
        mask = trie.score_mask[rows].to(device)
        with fp32_output_layer(model, fp32_logits), autocast(device, amp_dtype):
            logits = model(input_ids=tokens[:, :-1], use_cache=True, position_ids=positions,
                           **{kv_cache_field(): cache}).logits
        cache.crop(-depth)  # the prompt alone again, for the next group
        logprobs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, 1:, None])[..., 0]
        totals = first[tokens[:, 0]] + (logprobs * mask[:, 1:]).sum(-1)
        scores[start:start + len(group)] = totals[:len(group)].cpu().numpy()
    return scores
