"""The model as the pipeline uses it: a backbone with its LoRA adapter, the prompts and a scorer over the behavior
vocabulary, ranking by `scoring.mode` (exact, beam or generate). Stages train it, the evaluator and
`behaviorlm predict` rank with it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from behaviorlm.data.samples import BehaviorVocab, Sample
from behaviorlm.distributed import LOCAL, Dist
from behaviorlm.metrics import compute_metrics
from behaviorlm.prompts import PromptBuilder
from behaviorlm.scoring import CandidateScorer, beam_scores, generate_predictions, top_k_names
from behaviorlm.training import TrainExample


@dataclass
class BehaviorModel:
    """A backbone with its LoRA adapter, tokenizer and prompt builder, scoring over a fixed vocabulary.

    In a multi-process run (`dist`) every rank scores its shard of the samples and all ranks get all scores.
    """

    model: torch.nn.Module
    tokenizer: object
    prompts: PromptBuilder
    vocab: BehaviorVocab
    device: torch.device
    amp_dtype: Optional[torch.dtype]
    scorer: CandidateScorer
    scoring_mode: str = "exact"
    beam_width: int = 10
    dist: Dist = LOCAL
    beam_exact_top: int = 0  # beam mode: the top k of each ranking exact (scoring.beam_exact_top)
    beam_seed: str = "none"  # beam mode: history (the user's own behaviors ride in the prompt's forward) | none
    fp32_logits: bool = True  # the output projection in fp32 while ranking (scoring.fp32_logits)
    # Added to every candidate's log-likelihood before ranking (post-hoc logit adjustment); None: off.
    score_offset: Optional[np.ndarray] = None

    @classmethod
    def build(cls, model, tokenizer, prompts: PromptBuilder, vocab: BehaviorVocab, device: torch.device,
              amp_dtype: Optional[torch.dtype], scoring_cfg, dist: Dist = LOCAL) -> "BehaviorModel":
        """The model ranking as the config's `scoring` section says (mode, beam settings, batch size, fp32 output
        layer, near-tie rescoring); any object with those attributes will do."""
        candidates = [prompts.answer_ids(name) for name in vocab.names]
        scorer = CandidateScorer(model, candidates, tokenizer.pad_token_id, device, amp_dtype, scoring_cfg.batch_size,
                                 scoring_cfg.fp32_logits, scoring_cfg.near_tie_epsilon)
        return cls(model, tokenizer, prompts, vocab, device, amp_dtype, scorer, scoring_cfg.mode,
                   scoring_cfg.beam_width, dist, beam_exact_top=scoring_cfg.beam_exact_top,
                   fp32_logits=scoring_cfg.fp32_logits, beam_seed=scoring_cfg.beam_seed)

    @property
    def near_tie_epsilon(self) -> float:
        """Names this close to the best are rescored canonically (scoring.near_tie_epsilon), in beam mode as in the
        exact scorer, which holds the setting."""
        return self.scorer.near_tie_epsilon

    def prompt_ids(self, samples: Sequence[Sample]) -> list[list[int]]:
        return [self.prompts.sample_prompt_ids(s) for s in samples]

    def scores(self, samples: Sequence[Sample], progress: Optional[str] = None) -> np.ndarray:
        """(samples, behaviors) log-likelihood of every behavior name, in `vocab.names` order (beam mode: -inf
        for names the beam did not reach)."""
        mine, progress = self.dist.shard(samples), progress if self.dist.is_main else None
        if self.scoring_mode == "beam":
            local = beam_scores(self.model, self.prompt_ids(mine), self.scorer.trie, self.device, self.amp_dtype,
                                width=self.beam_width, progress=progress, batch_size=self.scorer.batch_size,
                                exact_top=self.beam_exact_top, fp32_logits=self.fp32_logits,
                                seed=self.history_seed(mine) if self.beam_seed == "history" else None,
                                near_tie_epsilon=self.near_tie_epsilon)
        else:
            local = self.scorer.score(self.prompt_ids(mine), progress=progress)
        return self.dist.gather_rows(local, len(samples))

    def history_seed(self, samples: Sequence[Sample]) -> list[list[int]]:
        """The behaviors of each sample's own history (candidate indices): the seeded beam scores them in the
        prompt's forward (on tuned NYC prompts the best name lies among them or outside every first token's bound
        for 83% of prompts; the rest take one more forward)."""
        column = {name: j for j, name in enumerate(self.vocab.names)}
        return [sorted({column[h] for h in s.history if h in column}) for s in samples]

    def rankings(self, samples: Sequence[Sample], k: int, progress: Optional[str] = None) -> list[list[str]]:
        if self.scoring_mode == "generate":
            longest = int(self.scorer.trie.score_mask.sum(1).max())
            mine = self.dist.shard(samples)
            predictions = generate_predictions(self.model, self.tokenizer, self.prompt_ids(mine),
                                               self.vocab.names, self.device, self.amp_dtype, longest,
                                               progress=progress if self.dist.is_main else None)
            predictions = self.dist.gather(predictions, len(samples))
            return [[p] if p is not None else [] for p in predictions]
        scores = self.scores(samples, progress)
        if self.score_offset is not None:
            scores = scores + self.score_offset  # -inf (outside the beam) stays -inf
        return top_k_names(scores, self.vocab.names, k)

    def evaluate(self, samples: Sequence[Sample], k: int, progress: Optional[str] = None):
        rankings = self.rankings(samples, k, progress)
        return compute_metrics([s.target for s in samples], rankings, self.vocab, k)

    def behavior_examples(self, samples: Sequence[Sample]) -> list[TrainExample]:
        return [TrainExample(tuple(p), tuple(self.prompts.answer_ids(s.target)))
                for p, s in zip(self.prompt_ids(samples), samples)]
