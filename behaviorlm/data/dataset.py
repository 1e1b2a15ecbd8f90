"""The dataset a run works on: events -> samples -> chronological splits -> anchor/tail vocabulary."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from behaviorlm.data.foursquare import load_foursquare
from behaviorlm.data.logs import DataError, read_behavior_log
from behaviorlm.data.samples import (BehaviorVocab, Sample, SampleIndex, build_vocab, cap_rows, split_rows,
                                     subsample_rows)
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
    if data_cfg.source == "foursquare_nyc":
        return load_foursquare(data_cfg.train_path, data_cfg.test_path, data_cfg.taxonomy_path)
    if data_cfg.source == "synthetic":
        return generate_synthetic_log(seed=seed, **data_cfg.synthetic)
    if data_cfg.path is None:
        raise DataError(f"data.source={data_cfg.source} needs data.path=FILE (a CSV, Parquet or JSONL behavior log)")
    columns = data_cfg.columns
    return read_behavior_log(data_cfg.path, user=columns.user, time=columns.time, behavior=columns.behavior,
                             category=columns.category, time_unit=data_cfg.time_unit,
                             duplicates=data_cfg.duplicates, time_format=data_cfg.time_format,
                             dayfirst=data_cfg.dayfirst, encoding=data_cfg.encoding)


def load_dataset(cfg: DictConfig) -> BehaviorDataset:
    data_cfg = cfg.data
    events = load_events(data_cfg, seed=data_cfg.eval_seed)  # a synthetic log is data: the same for every seed
    index = SampleIndex(events, data_cfg.history_len, data_cfg.min_history)
    if index.skipped_users:
        log.info("skipped %d users with at most %d events (data.min_history)", index.skipped_users,
                 data_cfg.min_history)
    if not len(index):
        raise DataError(f"data '{data_cfg.name}': no user has more than data.min_history={data_cfg.min_history} "
                        "events, so there is no sample")
    split = data_cfg.split
    times = index.target_times
    rows = split_rows(times, index.target_periods, split.test_start, split.test_fraction, split.val_fraction)
    for name in ("train", "test"):
        if not len(rows[name]):
            raise DataError(f"data '{data_cfg.name}': the {name} split is empty (sample targets from "
                            f"{pd.Timestamp(times.min())} to {pd.Timestamp(times.max())}); adjust "
                            "data.split.test_start or data.split.test_fraction")
    log.info("data %s: split on target times: train %s to %s, validation %s, test %s to %s", data_cfg.name,
             *_span(times[rows["train"]]), " to ".join(_span(times[rows["val"]])) or "none",
             *_span(times[rows["test"]]))
    targets = index.target_names
    # Anchors are defined on the full training period, before any subsampling for speed.
    vocab = build_vocab(events, targets[rows["train"]], cfg.anchor_threshold)
    full_sizes = {k: len(v) for k, v in rows.items()}
    # Training data may vary with the seed (it is part of what a seed replicates); validation and test are drawn
    # with data.eval_seed, so every job of a sweep is scored on the identical samples and can be paired.
    test_weights = None
    if data_cfg.test_sampling == "stratified":
        rows["test"], test_weights = stratified_rows(rows["test"], targets, vocab, data_cfg.max_test_samples,
                                                     data_cfg.eval_seed)
    else:
        rows["test"] = _keep(rows["test"], subsample_rows(len(rows["test"]), data_cfg.max_test_samples,
                                                          data_cfg.eval_seed))
    rows["val"] = _keep(rows["val"], subsample_rows(len(rows["val"]), data_cfg.max_val_samples, data_cfg.eval_seed))
    rows["train"] = _keep(rows["train"], subsample_rows(len(rows["train"]), data_cfg.max_train_samples, cfg.seed))
    rows["train"] = _keep(rows["train"], cap_rows(targets[rows["train"]], data_cfg.max_train_per_behavior, cfg.seed))
    splits = {name: index.samples(chosen) for name, chosen in rows.items()}
    dataset = BehaviorDataset(data_cfg.name, events, splits, full_sizes, vocab, index.skipped_users, test_weights)
    log.info("data %s: %s samples (full: %s), %d behaviors (%d anchors)", data_cfg.name,
             {k: len(v) for k, v in splits.items()}, full_sizes, len(vocab.names), len(vocab.anchors))
    return dataset


def _keep(rows: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    return rows if positions is None else rows[positions]


def _span(times: np.ndarray) -> tuple[str, ...]:
    return (str(pd.Timestamp(times.min())), str(pd.Timestamp(times.max()))) if len(times) else ()


def stratified_rows(rows: np.ndarray, targets: np.ndarray, vocab: BehaviorVocab, limit: int | None,
                    seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """Equal numbers of anchor-target and tail-target samples (a stratum smaller than its half is taken whole and
    the other fills the rest), with each stratum's share of `rows` as the weights that undo the allocation."""
    is_anchor = np.isin(targets[rows], list(vocab.anchors))
    anchor, tail = rows[is_anchor], rows[~is_anchor]
    weights = {"anchor": len(anchor) / max(1, len(rows)), "tail": len(tail) / max(1, len(rows))}
    if limit is None or len(rows) <= limit:
        return rows, weights
    n_tail = min(len(tail), max(limit // 2, limit - len(anchor)))
    n_anchor = min(len(anchor), limit - n_tail)
    kept = np.r_[_keep(anchor, subsample_rows(len(anchor), n_anchor, seed)),
                 _keep(tail, subsample_rows(len(tail), n_tail, seed + 1))]
    return np.sort(kept), weights


def stratified_subsample(samples: list[Sample], vocab: BehaviorVocab, limit: int | None,
                         seed: int) -> tuple[list[Sample], dict[str, float]]:
    """`stratified_rows` on a list of samples."""
    targets = np.array([s.target for s in samples], dtype=object)
    kept, weights = stratified_rows(np.arange(len(samples)), targets, vocab, limit, seed)
    return [samples[i] for i in kept], weights
