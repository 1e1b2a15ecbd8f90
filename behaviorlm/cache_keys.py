"""Stage-cache keys: what every stage depends on (the root key) and what each stage reads beyond its inputs.

A stage's key chains its parent's key with `stage_settings`, so any change upstream invalidates everything below.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from behaviorlm.cache import digest
from behaviorlm.data.dataset import BehaviorDataset

# The modules whose code determines a stage's output: any edit to them changes every cache key.
STAGE_CODE = ("stages.py", "training.py", "scoring.py", "selection.py", "prompts.py", "models.py", "metrics.py",
              "pipeline.py", "data/samples.py", "data/conversations.py", "data/dataset.py", "data/logs.py",
              "data/foursquare.py")


def code_fingerprint() -> str:
    package = Path(__file__).resolve().parent  # STAGE_CODE is relative to the package
    return digest([(name, (package / name).read_text(encoding="utf-8")) for name in STAGE_CODE])


def root_cache_key(cfg: DictConfig, dataset: BehaviorDataset, device: torch.device) -> str:
    """Everything every stage depends on: the exact samples, the model, the prompts, the seed, the code."""
    samples = [(s.user, str(s.time), s.history, s.target) for s in dataset.train + dataset.val]
    return digest({"samples": digest(samples), "anchors": sorted(dataset.vocab.anchors),
                   # contrastive selection reads each behavior's category (data.columns.category, the taxonomy)
                   "categories": digest(sorted(dataset.vocab.categories.items())),
                   "model": OmegaConf.to_container(cfg.model, resolve=True),
                   "prompt": OmegaConf.to_container(cfg.prompt, resolve=True), "seed": cfg.seed,
                   "eval_seed": cfg.data.eval_seed,
                   # the scorer decides the early-stopping epoch and the selection scores
                   "scoring": {"mode": cfg.scoring.mode, "beam_width": cfg.scoring.beam_width},
                   "device": device.type, "code": code_fingerprint(),
                   # an in-process tokenizer is trained on the conversations too when they are used
                   "tokenizer_saw_aux": cfg.model.source == "tiny_random" and cfg.aux_ratio > 0,
                   "train": {k: v for k, v in OmegaConf.to_container(cfg.train, resolve=True).items()
                             if k not in ("a_tuning", "b_tuning")}})


def stage_settings(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The settings a stage reads beyond its inputs (the earlier stages are chained into its key)."""
    container = partial(OmegaConf.to_container, resolve=True)
    if stage == "a_tuning":
        return {"train": container(cfg.train.a_tuning), "aux_ratio": cfg.aux_ratio,
                "aux": container(cfg.aux) if cfg.aux_ratio > 0 else None}
    if stage == "joint_tuning":
        return {"train": container(cfg.train.a_tuning)}
    if stage == "b_tuning":
        return {"train": container(cfg.train.b_tuning)}
    if stage == "difficulty_selection":
        return {"F": cfg.samples_per_behavior, "selection": container(cfg.selection)}
    return {"F": cfg.samples_per_behavior}
