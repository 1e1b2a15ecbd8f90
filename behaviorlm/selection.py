"""Difficulty-based selection of the balanced B-Tuning set (the paper's section 3.3).

The A-tuned model ranks every candidate for each training sample. Per behavior, up to F (`samples_per_behavior`)
samples are kept, filling the slots tier by tier:

  1. `contrastive`   mispredicted, and the predicted behavior shares the true one's category (the hardest cases:
                     within-category discrimination),
  2. `mispredicted`  other mispredicted samples,
  3. `low_margin`    correct samples with the smallest margin (true score minus the best other score),
  4. `unscored`      samples not scored (when scoring was capped), in random order.

Within tiers 1, 2 and 4 the order is seeded random; tier 3 goes by margin. `difficulty=false` or
`strategy=random` skips tiers 1-3 (a random balanced set); `contrastive=false` merges tier 1 into tier 2. A
behavior with fewer than F training samples contributes all of them. Every slot records its tier.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from behaviorlm.data.samples import BehaviorVocab, Sample


@dataclass
class Selection:
    indices: list[int]  # into the training samples
    tiers: list[str]  # how each slot was filled
    per_behavior: dict[str, dict[str, int]] = field(default_factory=dict)

    def tier_counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for tier in self.tiers:
            counts[tier] += 1
        return dict(counts)


def scoring_pool(samples: Sequence[Sample], max_per_behavior: Optional[int], seed: int) -> list[int]:
    """Indices of the training samples to score: all, or a seeded random cap per behavior."""
    by_behavior: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        by_behavior[sample.target].append(i)
    if max_per_behavior is None:
        return list(range(len(samples)))
    rng = np.random.default_rng(seed)
    pool = []
    for name in sorted(by_behavior):
        members = by_behavior[name]
        if len(members) > max_per_behavior:
            members = sorted(rng.choice(members, size=max_per_behavior, replace=False).tolist())
        pool.extend(members)
    return sorted(pool)


def select_balanced(samples: Sequence[Sample], vocab: BehaviorVocab, samples_per_behavior: int, seed: int,
                    scores: Optional[np.ndarray] = None, scored: Optional[Sequence[int]] = None,
                    difficulty: bool = True, contrastive: bool = True,
                    behaviors: Optional[set[str]] = None) -> Selection:
    """Build the balanced set. `scores[k]` holds candidate scores (in `vocab.names` order) of sample `scored[k]`;
    `behaviors` restricts the set to those target behaviors (None: all)."""
    rng = np.random.default_rng(seed)
    use_scores = difficulty and scores is not None
    contrastive = contrastive and vocab.has_categories
    column = {name: j for j, name in enumerate(vocab.names)}
    info: dict[int, tuple[bool, bool, float]] = {}  # sample -> (mispredicted, same category, margin)
    if use_scores:
        for row, index in enumerate(scored):
            target = samples[index].target
            own = scores[row, column[target]]
            others = scores[row].copy()
            others[column[target]] = -np.inf
            best_other = int(np.argmax(others))
            margin = float(own - others[best_other])
            predicted = vocab.names[best_other]
            same = contrastive and vocab.categories.get(predicted) == vocab.categories.get(target)
            info[index] = (margin < 0, same, margin)

    by_behavior: dict[str, list[int]] = defaultdict(list)
    for i, sample in enumerate(samples):
        if behaviors is None or sample.target in behaviors:
            by_behavior[sample.target].append(i)

    indices, tiers, per_behavior = [], [], {}
    for name in sorted(by_behavior, key=lambda n: vocab.names.index(n) if n in column else len(column)):
        members = by_behavior[name]
        shuffled = [members[k] for k in rng.permutation(len(members))]
        if use_scores:
            ranked = [
                ("contrastive", [i for i in shuffled if i in info and info[i][0] and info[i][1]]),
                ("mispredicted", [i for i in shuffled if i in info and info[i][0] and not info[i][1]]),
                ("low_margin", sorted((i for i in shuffled if i in info and not info[i][0]),
                                      key=lambda i: info[i][2])),
                ("unscored", [i for i in shuffled if i not in info]),
            ]
        else:
            ranked = [("random", shuffled)]
        counts: dict[str, int] = {}
        for tier, candidates in ranked:
            take = candidates[:samples_per_behavior - sum(counts.values())]
            if take:
                counts[tier] = len(take)
                indices.extend(take)
                tiers.extend([tier] * len(take))
        per_behavior[name] = counts
    return Selection(indices, tiers, per_behavior)
