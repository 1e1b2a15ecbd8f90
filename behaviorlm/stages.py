"""The stages of BehaviorLM, each a small function over plain data (samples in, adapter/selection out):

  a_tuning              LoRA on anchor-behavior samples + `aux_ratio` general conversations
  difficulty_selection  score training samples with the current model, keep F hard ones per behavior
  random_balanced       F random samples per behavior (balanced_only / balanced_first / the random control)
  tail_balanced         F random samples per tail behavior, no anchor sample (tail_first / tail_only)
  b_tuning              continue the same adapter on the balanced (or tail) set
  joint_tuning          plain fine-tuning on every training sample (the paper's baseline)

Which stages each `stage_order` runs, and what each is, is declared in behaviorlm/stage_plan.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from behaviorlm.behavior_model import BehaviorModel
from behaviorlm.config import ConfigError
from behaviorlm.data.samples import BehaviorVocab, Sample
from behaviorlm.stage_plan import first_index
from behaviorlm.selection import Selection, scoring_pool, select_balanced
from behaviorlm.training import TrainExample, train_lora
from behaviorlm.utils import kill_point

log = logging.getLogger(__name__)



def check_remedies(cfg: DictConfig) -> None:
    """Adapter interpolation needs an A-tuned adapter that B-Tuning then continued (A before B in the plan)."""
    alpha = cfg.train.b_tuning.merge_alpha
    if alpha == 1.0 or cfg.method != "behaviorlm":
        return
    a_tuned = first_index(cfg.stage_order, trains_on="anchors")
    b_tuned = first_index(cfg.stage_order, trains_on="selection")
    if a_tuned is None or b_tuned is None or a_tuned > b_tuned:
        raise ConfigError(f"config key 'train.b_tuning.merge_alpha' = {alpha} interpolates from the A-tuned to the "
                          f"B-tuned adapter, and stage_order={cfg.stage_order} does not A-tune before B-Tuning "
                          "(use progressive, or merge_alpha=1)")
    if cfg.launcher.name != "local":
        raise ConfigError(f"config key 'train.b_tuning.merge_alpha' = {alpha} is not supported with "
                          f"launcher={cfg.launcher.name} yet: run the interpolation with launcher=local")


def check_anchors(stage_order: str, vocab: BehaviorVocab) -> None:
    """A stage order that A-tunes needs anchor behaviors: without any, A-Tuning would be skipped in silence."""
    if first_index(stage_order, trains_on="anchors") is None or vocab.anchors:
        return
    total = max(1, sum(vocab.train_counts.values()))
    top = max(vocab.names, key=lambda name: vocab.train_counts[name])
    share = vocab.train_counts[top] / total
    raise ConfigError(f"config key 'anchor_threshold' = {vocab.anchor_threshold} leaves no anchor behavior (the "
                      f"largest share of training targets is {share:.4f}, {top!r}), and stage_order={stage_order} "
                      f"A-tunes on anchors: set anchor_threshold below {share:.4f}")


def logit_adjustment(vocab: BehaviorVocab, tuned_targets: Sequence[str], tau: float,
                     target_prior: str = "train") -> np.ndarray:
    """tau * (log p_target - log p_tuned) per behavior, in `vocab.names` order (Menon et al., ICLR 2021).

    The scores of a stage tuned on a set carry that set's prior p_tuned; this swaps it for p_target by tau (0: off,
    1: fully). p_target = train: a stage tuned on a balanced set (B-Tuning) moves back towards the anchors. p_target
    = uniform: a stage tuned on the training distribution (joint) moves towards the tail, Menon's post-hoc
    adjustment (-tau * log p_train). Priors are add-one smoothed, so a behavior absent from a set keeps a finite
    offset."""
    tuned = pd.Series(list(tuned_targets), dtype=object).value_counts()
    last = np.array([tuned.get(n, 0) for n in vocab.names], dtype=float) + 1.0
    if target_prior == "train":
        target = np.array([vocab.train_counts.get(n, 0) for n in vocab.names], dtype=float) + 1.0
    elif target_prior == "uniform":
        target = np.ones(len(vocab.names))
    else:
        raise ValueError(f"logit_adjustment: target_prior {target_prior!r} is not train or uniform")
    return tau * (np.log(target / target.sum()) - np.log(last / last.sum()))


class CandidateSoftmaxLoss:
    """B-Tuning's `balanced_softmax` objective: cross-entropy over the behavior names (every name's summed
    log-likelihood from the exact trie scorer, one forward per prompt) with `offset` added to each name's logit.

    Balanced softmax (Ren et al., NeurIPS 2020) adds log n_y, the counts of the set trained on, so that the scores
    learn the posterior under another prior. With offset = log p_B - log p_train (`logit_adjustment` at tau = -1)
    the adjusted logits fit the balanced B set while the scores themselves keep the training prior: the loss-time
    counterpart of post-hoc logit adjustment at tau = 1 (Menon et al., ICLR 2021). Normalised per sample."""

    def __init__(self, bm: "BehaviorModel", offset: np.ndarray):
        self.scorer = bm.scorer
        self.answer_index = {tuple(bm.prompts.answer_ids(name)): i for i, name in enumerate(bm.vocab.names)}
        self.offset = torch.tensor(offset, dtype=torch.float32, device=bm.device)

    def batch(self, examples: Sequence[TrainExample]):
        unknown = [e for e in examples if e.answer_ids not in self.answer_index]
        if unknown:  # aux conversations have free-text answers: this objective is for behavior examples only
            raise ValueError(f"balanced_softmax: {len(unknown)} training example(s) answer with something other "
                             "than a behavior name (aux conversations?); use loss=ce for that stage")
        targets = torch.tensor([self.answer_index[e.answer_ids] for e in examples], device=self.offset.device)
        return [e.prompt_ids for e in examples], targets

    def count(self, batch) -> int:
        return len(batch[1])

    def width(self, batch) -> int:
        return max(len(prompt) for prompt in batch[0])

    def loss_sum(self, model, batch) -> torch.Tensor:
        prompts, targets = batch
        logits = self.scorer.log_likelihoods(prompts, model) + self.offset
        return torch.nn.functional.cross_entropy(logits, targets, reduction="sum")


def aux_example_count(n_behavior_examples: int, aux_ratio: float) -> int:
    """How many conversations make up `aux_ratio` of the A-Tuning set (a deterministic count)."""
    return int(round(aux_ratio * n_behavior_examples / (1.0 - aux_ratio)))


def aux_examples(bm: BehaviorModel, conversations: Sequence[list[dict]], count: int, max_response_tokens: int,
                 seed: int) -> list[TrainExample]:
    if count == 0:
        return []
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(conversations), size=count, replace=count > len(conversations))
    examples = []
    for i in picks:
        prompt, answer = bm.prompts.conversation_ids(conversations[int(i)], max_response_tokens)
        examples.append(TrainExample(tuple(prompt), tuple(answer), kind="aux"))
    return examples


def validation_monitor(bm: BehaviorModel, val_samples: Sequence[Sample], monitor: str, k: int = 1,
                       records: Optional[list] = None) -> Callable[[], float]:
    """Early stopping's objective: `monitor` (acc_overall | acc_tail | macro_f1) on the validation slice; a slice
    without tail samples falls back to overall accuracy rather than stopping on a constant. Each epoch's full
    metrics are appended to `records`, so the best epoch's need not be scored again."""
    def validate() -> float:
        metrics = bm.evaluate(val_samples, k=k)[0]
        if records is not None:
            records.append(metrics)
        if metrics.get(monitor) is None:
            log.warning("the validation slice has no sample for monitor %s: early stopping uses acc_overall", monitor)
            return float(metrics["acc_overall"])
        return float(metrics[monitor])

    return validate


def tune(bm: BehaviorModel, examples: Sequence[TrainExample], stage_cfg: DictConfig, train_cfg: DictConfig,
         val_samples: Sequence[Sample], seed: int, desc: str, on_step: Optional[Callable[[dict], None]] = None,
         checkpoint_dir: Optional[Path] = None, k: int = 1, records: Optional[list] = None, objective=None):
    """One LoRA training stage with early stopping on `stage_cfg.monitor` over the validation slice (each epoch's
    validation metrics at acc@`k` go to `records`)."""
    validate = None
    if train_cfg.early_stopping and val_samples:
        validate = validation_monitor(bm, val_samples, stage_cfg.monitor, k, records)
    return train_lora(bm.model, examples, train_cfg, stage_cfg, pad_id=bm.tokenizer.pad_token_id, device=bm.device,
                      amp_dtype=bm.amp_dtype, validate=validate, seed=seed, desc=desc, on_step=on_step,
                      checkpoint_dir=checkpoint_dir, dist=bm.dist, objective=objective)


def a_tuning_set(bm: BehaviorModel, train: Sequence[Sample], conversations: Sequence[list[dict]],
                 aux_ratio: float, max_response_tokens: int, seed: int) -> tuple[list[TrainExample], dict]:
    anchors = [s for s in train if s.target in bm.vocab.anchors]
    behavior = bm.behavior_examples(anchors)
    aux = aux_examples(bm, conversations, aux_example_count(len(behavior), aux_ratio), max_response_tokens, seed)
    realised = len(aux) / max(1, len(aux) + len(behavior))
    log.info("A-Tuning set: %d anchor samples + %d conversations (aux share %.4f, requested %.4f)",
             len(behavior), len(aux), realised, aux_ratio)
    report = {"n_anchor_examples": len(behavior), "n_aux_examples": len(aux), "aux_ratio_realised": realised}
    return behavior + aux, report


def uses_difficulty(selection_cfg: DictConfig) -> bool:
    return selection_cfg.strategy == "difficulty" and selection_cfg.difficulty


def selection_scores(bm: BehaviorModel, train: Sequence[Sample], selection_cfg: DictConfig,
                     seed: int) -> tuple[list[int], np.ndarray]:
    """Score the selection pool with the current model: (pool indices, candidate scores per pooled sample)."""
    pool = scoring_pool(train, selection_cfg.max_scored_per_behavior, seed)
    kill_point("difficulty_selection:scoring")
    return pool, bm.scores([train[i] for i in pool], progress="selection scoring")


def difficulty_selection(bm: BehaviorModel, train: Sequence[Sample], samples_per_behavior: int,
                         selection_cfg: DictConfig, seed: int,
                         scored: Optional[tuple[list[int], np.ndarray]] = None) -> tuple[Selection, dict]:
    """The balanced B-Tuning set; `scored` passes in pool scores computed earlier (the stage cache does)."""
    pool, scores = [], None
    if uses_difficulty(selection_cfg):
        pool, scores = scored if scored is not None else selection_scores(bm, train, selection_cfg, seed)
    selection = select_balanced(train, bm.vocab, samples_per_behavior, seed, scores=scores, scored=pool,
                                difficulty=uses_difficulty(selection_cfg), contrastive=selection_cfg.contrastive)
    tiers = selection.tier_counts()
    report = {"n_scored": len(pool), "n_selected": len(selection.indices),
              # slots filled at random because a behavior had no scored sample left: selection did not choose them
              "share_random_fill": tiers.get("unscored", 0) / max(1, len(selection.indices)),
              **{f"tier_{k}": v for k, v in tiers.items()}}
    if scores is not None and len(pool):  # nothing scored: no accuracy to report (a mean of none is NaN)
        predicted = np.argmax(scores, axis=1)
        report["train_acc_scored"] = float(np.mean([bm.vocab.names[p] == train[i].target
                                                    for p, i in zip(predicted, pool)]))
    return selection, report


def random_balanced(bm: BehaviorModel, train: Sequence[Sample], samples_per_behavior: int,
                    seed: int) -> tuple[Selection, dict]:
    selection = select_balanced(train, bm.vocab, samples_per_behavior, seed, difficulty=False)
    return selection, {"n_selected": len(selection.indices)}


def tail_balanced(bm: BehaviorModel, train: Sequence[Sample], samples_per_behavior: int,
                  seed: int) -> tuple[Selection, dict]:
    """F random samples of each tail behavior and none of an anchor: the tail set of tail_first / tail_only."""
    selection = select_balanced(train, bm.vocab, samples_per_behavior, seed, difficulty=False,
                                behaviors=bm.vocab.tail)
    return selection, {"n_selected": len(selection.indices)}


def role_counts(samples: Sequence[Sample], vocab: BehaviorVocab) -> dict[str, int]:
    """How many of the samples a stage trained on have an anchor or a tail target."""
    anchors = sum(s.target in vocab.anchors for s in samples)
    return {"n_anchor_targets": anchors, "n_tail_targets": len(samples) - anchors}
