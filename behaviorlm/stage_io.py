"""What a stage leaves in the stage cache and what a run leaves in its folder, and how they are read back.

  save_stage / restore_stage   a tuning stage's adapter or a selection stage's balanced set, with its report
  cached_selection_scores      the scored selection pool, an entry of its own shared by every F
  cached_test_rankings         the test set's rankings, shared by every job whose evaluation key is the same
  save_run_artifacts           the adapter, vocabulary and prompt settings `behaviorlm predict` needs
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from behaviorlm.behavior_model import BehaviorModel
from behaviorlm.cache import StageCache
from behaviorlm.cache_keys import EVALUATION, backbone_content, evaluation_key, stage_key
from behaviorlm.data.dataset import BehaviorDataset
from behaviorlm.metrics import sample_id
from behaviorlm.selection import Selection
from behaviorlm.stage_plan import SCORES_STAGE, TUNING_STAGES
from behaviorlm.stages import selection_scores, uses_difficulty
from behaviorlm.utils import atomic_write_json, shareable


def save_stage(folder: Path, stage: str, adapter_state: dict | None, report: dict,
               selection: Selection | None) -> None:
    atomic_write_json(folder / "report.json", report)
    if stage in TUNING_STAGES:
        torch.save(adapter_state, folder / "adapter.pt")
    else:
        atomic_write_json(folder / "selection.json", {"indices": selection.indices, "tiers": selection.tiers,
                                                      "per_behavior": selection.per_behavior})


def restore_stage(folder: Path, stage: str, bm: BehaviorModel,
                  selection: Selection | None) -> tuple[dict, Selection | None]:
    report = json.loads((folder / "report.json").read_text())
    if stage in TUNING_STAGES:
        bm.model.load_state_dict(torch.load(folder / "adapter.pt", map_location=bm.device), strict=False)
    else:
        saved = json.loads((folder / "selection.json").read_text())
        selection = Selection(saved["indices"], saved["tiers"], saved["per_behavior"])
    return report, selection


def cached_selection_scores(cfg: DictConfig, config: dict, cache: StageCache, parent_key: str, bm: BehaviorModel,
                            dataset: BehaviorDataset) -> tuple[list[int], np.ndarray] | None:
    """Scores of the selection pool under the model so far; they do not depend on F, so a sweep over F (or over
    the contrastive switch) scores once. `config` is the resolved config the stage keys hash."""
    if not uses_difficulty(cfg.selection):
        return None
    key = stage_key(parent_key, SCORES_STAGE, config)
    dist = bm.dist
    entry = dist.agree(cache.load(SCORES_STAGE, key) if dist.is_main else None)
    if entry is not None:
        saved = np.load(entry / "scores.npz")
        return saved["pool"].tolist(), saved["scores"]
    pool, scores = selection_scores(bm, dataset.train, cfg.selection, cfg.seed)
    if dist.is_main:
        cache.save(SCORES_STAGE, key, lambda folder: np.savez(folder / "scores.npz", pool=np.array(pool),
                                                                     scores=scores))
    dist.barrier()
    return pool, scores


def cached_test_rankings(cfg: DictConfig, cache: StageCache, bm: BehaviorModel, dataset: BehaviorDataset,
                         adapter_state: dict[str, torch.Tensor], k: int) -> tuple[list[list[str]], bool]:
    """(the test set's top-k rankings, whether they came from the cache): a job whose evaluation key
    (cache_keys.evaluation_key: the adapter by content, the test samples, prompts, scoring and code) equals an
    earlier job's reuses its rankings, so the untuned model is ranked once for all seeds of a sweep."""
    key = evaluation_key(cfg, adapter_state, dataset.test, bm.vocab.names, bm.score_offset, bm.device,
                         backbone_content(cfg, bm.model, bm.tokenizer))
    dist = bm.dist
    entry = dist.agree(cache.load(EVALUATION, key) if dist.is_main else None)
    if entry is not None:
        stored = json.loads((entry / "rankings.json").read_text())
        return [stored[sample_id(s)] for s in dataset.test], True
    rankings = bm.rankings(dataset.test, k, progress="test")
    if dist.is_main:
        by_sample = {sample_id(s): ranking for s, ranking in zip(dataset.test, rankings)}
        cache.save(EVALUATION, key, lambda folder: (folder / "rankings.json").write_text(json.dumps(by_sample)))
    dist.barrier()
    return rankings, False


def save_run_artifacts(cfg: DictConfig, bm: BehaviorModel, base_folder: str, out: Path,
                       adapter_state: dict[str, torch.Tensor]) -> None:
    """What `behaviorlm predict` needs to reuse this run: adapter, vocabulary, prompt settings, model reference."""
    bm.model.save_pretrained(out / "adapter", state_dict=adapter_state)
    shareable(out / "adapter")  # safetensors writes 0600: a lab's shared run folder must be readable by the lab
    if Path(base_folder) == out / "base_model":
        base_folder = "base_model"  # relative: the run folder can be moved
    manifest = {
        "model": OmegaConf.to_container(cfg.model, resolve=True),
        "base_model_folder": base_folder,
        "prompt": {**OmegaConf.to_container(cfg.prompt, resolve=True), "seed": cfg.data.eval_seed},
        "history_len": cfg.data.history_len,
        "min_history": cfg.data.min_history,
        "fp32_logits": cfg.scoring.fp32_logits,  # predict ranks as the run's own test did
        "near_tie_epsilon": cfg.scoring.near_tie_epsilon,
        "vocab": bm.vocab.to_dict(),
    }
    atomic_write_json(out / "manifest.json", manifest)
