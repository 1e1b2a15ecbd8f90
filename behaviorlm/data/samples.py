"""From an event log to next-behavior samples, a chronological split and the anchor/tail vocabulary.

A sample is one event that has at least `min_history` earlier events of the same user: its input is up to
`history_len` previous behaviors with their local weekday and hour, its target the event's behavior. Splits cut on
the target's time, so nothing after a training target is ever used to build or tune on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    user: str
    time: pd.Timestamp  # the target event's local time
    history: tuple[str, ...]  # previous behaviors, oldest first
    history_times: tuple[tuple[int, int], ...]  # (weekday 0=Monday, hour) of each history event
    target: str
    period: Optional[str] = None  # train | test where the source fixes the split


def build_samples(events: pd.DataFrame, history_len: int, min_history: int) -> tuple[list[Sample], int]:
    """Return the samples (user by user, in time order) and the number of users skipped for too short a history."""
    samples: list[Sample] = []
    skipped_users = 0
    has_period = "period" in events.columns
    for user, group in events.sort_values(["user", "time"], kind="stable").groupby("user", sort=True):
        if len(group) <= min_history:
            skipped_users += 1
            continue
        behaviors = group["behavior"].tolist()
        times = group["time"].tolist()
        stamps = [(t.weekday(), t.hour) for t in times]
        periods = group["period"].tolist() if has_period else [None] * len(group)
        for i in range(min_history, len(group)):
            lo = max(0, i - history_len)
            samples.append(Sample(user=str(user), time=times[i], history=tuple(behaviors[lo:i]),
                                  history_times=tuple(stamps[lo:i]), target=behaviors[i], period=periods[i]))
    if skipped_users:
        log.info("skipped %d users with at most %d events (data.min_history)", skipped_users, min_history)
    return samples, skipped_users


def time_cutoff(times: list[pd.Timestamp], later_fraction: float) -> pd.Timestamp:
    """The time at/after which about `later_fraction` of the given times fall."""
    ordered = sorted(times)
    index = min(len(ordered) - 1, max(0, int(round(len(ordered) * (1.0 - later_fraction)))))
    return ordered[index]


def split_samples(samples: list[Sample], test_start: Optional[str], test_fraction: float,
                  val_fraction: float) -> dict[str, list[Sample]]:
    """Chronological train/val/test split on target times (periods fixed by the source win over fractions)."""
    if not samples:
        return {"train": [], "val": [], "test": []}
    if samples[0].period is not None:
        train = [s for s in samples if s.period == "train"]
        test = [s for s in samples if s.period == "test"]
    else:
        cutoff = pd.Timestamp(test_start) if test_start else time_cutoff([s.time for s in samples], test_fraction)
        train = [s for s in samples if s.time < cutoff]
        test = [s for s in samples if s.time >= cutoff]
    val: list[Sample] = []
    if val_fraction > 0 and train:
        val_cutoff = time_cutoff([s.time for s in train], val_fraction)
        val = [s for s in train if s.time >= val_cutoff]
        train = [s for s in train if s.time < val_cutoff]
    return {"train": train, "val": val, "test": test}


def subsample(samples: list[Sample], limit: Optional[int], seed: int) -> list[Sample]:
    """A seeded random subset that keeps the original order (so the label distribution is preserved)."""
    if limit is None or len(samples) <= limit:
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), size=limit, replace=False))
    return [samples[i] for i in keep]


def cap_per_behavior(samples: list[Sample], limit: Optional[int], seed: int) -> list[Sample]:
    """At most `limit` samples per target behavior (seeded), keeping the original order: k-shot training sets."""
    if limit is None:
        return samples
    rng = np.random.default_rng(seed)
    by_target: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        by_target.setdefault(sample.target, []).append(i)
    keep = []
    for members in by_target.values():
        keep.extend(members if len(members) <= limit else rng.choice(members, size=limit, replace=False).tolist())
    return [samples[i] for i in sorted(keep)]


@dataclass
class BehaviorVocab:
    """The closed answer space: every behavior name of the log, its category and its anchor/tail role."""

    names: list[str]  # ordered by training-target count, most frequent first
    train_counts: dict[str, int]
    categories: dict[str, str] = field(default_factory=dict)  # empty when the log has no categories
    anchors: set[str] = field(default_factory=set)
    anchor_threshold: float = 0.01

    @property
    def tail(self) -> set[str]:
        return set(self.names) - self.anchors

    @property
    def unseen(self) -> set[str]:
        """Behaviors never a training target: only zero-shot transfer can predict them."""
        return {n for n in self.names if self.train_counts.get(n, 0) == 0}

    @property
    def has_categories(self) -> bool:
        return bool(self.categories)

    def role(self, name: str) -> str:
        if name in self.anchors:
            return "anchor"
        return "unseen" if self.train_counts.get(name, 0) == 0 else "tail"

    def to_dict(self) -> dict:
        return {"names": self.names, "train_counts": self.train_counts, "categories": self.categories,
                "anchors": sorted(self.anchors), "anchor_threshold": self.anchor_threshold}

    @classmethod
    def from_dict(cls, data: dict) -> "BehaviorVocab":
        return cls(names=list(data["names"]), train_counts=dict(data["train_counts"]),
                   categories=dict(data["categories"]), anchors=set(data["anchors"]),
                   anchor_threshold=float(data["anchor_threshold"]))


def build_vocab(events: pd.DataFrame, train: list[Sample], anchor_threshold: float) -> BehaviorVocab:
    """Anchors are behaviors whose share of training targets exceeds `anchor_threshold`; all others are tail."""
    counts = pd.Series([s.target for s in train], dtype=object).value_counts()
    total = max(1, int(counts.sum()))
    all_names = set(events["behavior"].unique())
    names = sorted(all_names, key=lambda n: (-int(counts.get(n, 0)), n))
    anchors = {n for n in names if counts.get(n, 0) / total > anchor_threshold}
    categories = {}
    if events["category"].notna().any():
        categories = events.drop_duplicates("behavior").set_index("behavior")["category"].to_dict()
    return BehaviorVocab(names=names, train_counts={n: int(counts.get(n, 0)) for n in names},
                         categories=categories, anchors=anchors, anchor_threshold=anchor_threshold)
