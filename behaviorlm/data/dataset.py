"""The dataset a run works on: events -> samples -> chronological splits -> anchor/tail vocabulary."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
from omegaconf import DictConfig

from behaviorlm.data.foursquare import load_foursquare
from behaviorlm.data.logs import DataError, read_behavior_log
from behaviorlm.data.samples import (BehaviorVocab, Sample, build_samples, build_vocab, cap_per_behavior,
                                     split_samples, subsample)
from behaviorlm.data.synthetic import generate_synthetic_log

log = logging.getLogger(__name__)


@dataclass
class BehaviorDataset:
    name: str
    events: pd.DataFrame
    splits: dict[str, list[Sample]]  # train | val | test, after any subsampling
    full_sizes: dict[str, int]  # split sizes before subsampling
    vocab: BehaviorVocab
    skipped_users: int
    # Stratified test sampling: each stratum's share of the full test period ("anchor", "tail"), so that overall
    # metrics can be reweighted to the period's real mix. None: the test sample is uniform (its own mix).
    test_weights: dict[str, float] | None = None

    @property
    def train(self) -> list[Sample]:
        return self.splits["train"]

    @property
    def val(self) -> list[Sample]:
        return self.splits["val"]

    @property
    def test(self) -> list[Sample]:
        return self.splits["test"]


def load_events(data_cfg: DictConfig, seed: int = 0) -> pd.DataFrame:
    """The canonical event frame for `data=foursquare_nyc | csv | synthetic`."""
    if data_cfg.name == "foursquare_nyc":
        return load_foursquare(data_cfg.train_path, data_cfg.test_path, data_cfg.taxonomy_path)
    if data_cfg.name == "synthetic":
        return generate_synthetic_log(seed=seed, **data_cfg.synthetic)
    if data_cfg.path is None:
        raise DataError(f"data={data_cfg.name} needs data.path=FILE (a CSV, Parquet or JSONL behavior log)")
    columns = data_cfg.columns
    return read_behavior_log(data_cfg.path, user=columns.user, time=columns.time, behavior=columns.behavior,
                             category=columns.category, time_unit=data_cfg.time_unit,
                             duplicates=data_cfg.duplicates)


def load_dataset(cfg: DictConfig) -> BehaviorDataset:
    data_cfg = cfg.data
    events = load_events(data_cfg, seed=data_cfg.eval_seed)  # a synthetic log is data: the same for every seed
    samples, skipped = build_samples(events, data_cfg.history_len, data_cfg.min_history)
    if not samples:
        raise DataError(f"data '{data_cfg.name}': no user has more than data.min_history={data_cfg.min_history} "
                        "events, so there is no sample")
    split = data_cfg.split
    splits = split_samples(samples, split.test_start, split.test_fraction, split.val_fraction)
    for name in ("train", "test"):
        if not splits[name]:
            raise DataError(f"data '{data_cfg.name}': the {name} split is empty; adjust data.split.test_start or "
                            "data.split.test_fraction")
    # Anchors are defined on the full training period, before any subsampling for speed.
    vocab = build_vocab(events, splits["train"], cfg.anchor_threshold)
    full_sizes = {k: len(v) for k, v in splits.items()}
    # Training data may vary with the seed (it is part of what a seed replicates); validation and test are drawn
    # with data.eval_seed, so every job of a sweep is scored on the identical samples and can be paired.
    test_weights = None
    if data_cfg.test_sampling == "stratified":
        splits["test"], test_weights = stratified_subsample(splits["test"], vocab, data_cfg.max_test_samples,
                                                            data_cfg.eval_seed)
    else:
        splits["test"] = subsample(splits["test"], data_cfg.max_test_samples, data_cfg.eval_seed)
    splits["val"] = subsample(splits["val"], data_cfg.max_val_samples, data_cfg.eval_seed)
    splits["train"] = subsample(splits["train"], data_cfg.max_train_samples, cfg.seed)
    splits["train"] = cap_per_behavior(splits["train"], data_cfg.max_train_per_behavior, cfg.seed)
    dataset = BehaviorDataset(data_cfg.name, events, splits, full_sizes, vocab, skipped, test_weights)
    log.info("data %s: %s samples (full: %s), %d behaviors (%d anchors)", data_cfg.name,
             {k: len(v) for k, v in splits.items()}, full_sizes, len(vocab.names), len(vocab.anchors))
    return dataset


def stratified_subsample(samples: list[Sample], vocab: BehaviorVocab, limit: int | None,
                         seed: int) -> tuple[list[Sample], dict[str, float]]:
    """Equal numbers of anchor-target and tail-target samples (a stratum smaller than its half is taken whole and
    the other fills the rest), with each stratum's share of `samples` as the weights that undo the allocation."""
    anchor = [s for s in samples if s.target in vocab.anchors]
    tail = [s for s in samples if s.target not in vocab.anchors]
    weights = {"anchor": len(anchor) / max(1, len(samples)), "tail": len(tail) / max(1, len(samples))}
    if limit is None or len(samples) <= limit:
        return samples, weights
    n_tail = min(len(tail), max(limit // 2, limit - len(anchor)))
    n_anchor = min(len(anchor), limit - n_tail)
    keep = {id(s) for s in subsample(anchor, n_anchor, seed) + subsample(tail, n_tail, seed + 1)}
    return [s for s in samples if id(s) in keep], weights
