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


class SampleIndex:
    """Every sample of an event log as positions into its (user, time)-sorted event arrays.

    Splits, subsamples and per-behavior caps are computed on these arrays (numpy), and `Sample` objects are built
    only for the rows a run keeps: a log of millions of events costs about what reading it costs."""

    def __init__(self, events: pd.DataFrame, history_len: int, min_history: int):
        events = events.sort_values(["user", "time"], kind="stable")
        users = events["user"].astype(str).to_numpy(dtype=object)
        n = len(users)
        first_of_user = np.ones(n, dtype=bool)
        first_of_user[1:] = users[1:] != users[:-1]
        positions = np.arange(n)
        user_start = np.maximum.accumulate(np.where(first_of_user, positions, 0))
        rank = positions - user_start  # events of the same user before this one
        self.target = positions[rank >= min_history]  # sample row -> its target event
        self.start = np.maximum(user_start[self.target], self.target - history_len)  # its history's first event
        user_sizes = np.diff(np.r_[positions[first_of_user], n])
        self.skipped_users = int((user_sizes <= min_history).sum())
        self.users = users
        self.times = events["time"].to_numpy()
        self.behaviors = events["behavior"].to_numpy(dtype=object)
        self.periods = events["period"].to_numpy(dtype=object) if "period" in events.columns else None
        weekday, hour = events["time"].dt.weekday.to_numpy(), events["time"].dt.hour.to_numpy()
        self._stamps = (weekday, hour)

    def __len__(self) -> int:
        return len(self.target)

    @property
    def target_names(self) -> np.ndarray:
        return self.behaviors[self.target]

    @property
    def target_times(self) -> np.ndarray:
        return self.times[self.target]

    @property
    def target_periods(self) -> Optional[np.ndarray]:
        return None if self.periods is None else self.periods[self.target]

    def samples(self, rows: Optional[np.ndarray] = None) -> list[Sample]:
        """The `Sample` objects of the given rows (all by default), in row order."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=int)
        weekday, hour = self._stamps
        if len(rows) * 4 < len(self.behaviors):  # a few rows of a long log: slice the arrays row by row
            behaviors, weekdays, hours = self.behaviors, weekday, hour
            def window(lo: int, hi: int):
                return (tuple(behaviors[lo:hi].tolist()),
                        tuple(zip(weekdays[lo:hi].tolist(), hours[lo:hi].tolist())))
        else:  # most of the log: Python lists once, then plain slices
            names, stamps = self.behaviors.tolist(), list(zip(weekday.tolist(), hour.tolist()))
            def window(lo: int, hi: int):
                return tuple(names[lo:hi]), tuple(stamps[lo:hi])
        times = pd.DatetimeIndex(self.times[self.target[rows]])
        periods = self.target_periods
        built = []
        for row, t, lo, time in zip(rows.tolist(), self.target[rows].tolist(), self.start[rows].tolist(), times):
            history, history_times = window(lo, t)
            built.append(Sample(user=self.users[t], time=time, history=history, history_times=history_times,
                                target=self.behaviors[t], period=None if periods is None else periods[row]))
        return built


def build_samples(events: pd.DataFrame, history_len: int, min_history: int) -> tuple[list[Sample], int]:
    """Return the samples (user by user, in time order) and the number of users skipped for too short a history."""
    index = SampleIndex(events, history_len, min_history)
    if index.skipped_users:
        log.info("skipped %d users with at most %d events (data.min_history)", index.skipped_users, min_history)
    return index.samples(), index.skipped_users


def time_cutoff(times, later_fraction: float) -> pd.Timestamp:
    """The time at/after which about `later_fraction` of the given times fall."""
    values = times if isinstance(times, np.ndarray) else pd.DatetimeIndex(times).to_numpy()
    index = min(len(values) - 1, max(0, int(round(len(values) * (1.0 - later_fraction)))))
    return pd.Timestamp(np.partition(values, index)[index])  # the index-th smallest, without sorting them all


def split_rows(times: np.ndarray, periods: Optional[np.ndarray], test_start: Optional[str], test_fraction: float,
               val_fraction: float) -> dict[str, np.ndarray]:
    """Chronological train/val/test split of samples by their target times, as sample positions (periods fixed by
    the source win over fractions). Validation is the latest `val_fraction` of the training period."""
    rows = np.arange(len(times))
    if len(times) == 0:
        return {"train": rows, "val": rows, "test": rows}
    if periods is not None and periods[0] is not None:
        train, test = rows[periods == "train"], rows[periods == "test"]
    else:
        cutoff = pd.Timestamp(test_start) if test_start else time_cutoff(times, test_fraction)
        later = times >= cutoff.to_datetime64()
        train, test = rows[~later], rows[later]
    val = rows[:0]
    if val_fraction > 0 and len(train):
        val_cutoff = time_cutoff(times[train], val_fraction).to_datetime64()
        later = times[train] >= val_cutoff
        train, val = train[~later], train[later]
    return {"train": train, "val": val, "test": test}


def split_samples(samples: list[Sample], test_start: Optional[str], test_fraction: float,
                  val_fraction: float) -> dict[str, list[Sample]]:
    """Chronological train/val/test split on target times (periods fixed by the source win over fractions)."""
    if not samples:
        return {"train": [], "val": [], "test": []}
    times = pd.DatetimeIndex([s.time for s in samples]).to_numpy()
    periods = np.array([s.period for s in samples], dtype=object)
    rows = split_rows(times, periods, test_start, test_fraction, val_fraction)
    return {name: [samples[i] for i in chosen] for name, chosen in rows.items()}


def subsample_rows(n: int, limit: Optional[int], seed: int) -> Optional[np.ndarray]:
    """The positions a seeded random subset of `limit` of `n` keeps, in order (None: keep all)."""
    if limit is None or n <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def subsample(samples: list[Sample], limit: Optional[int], seed: int) -> list[Sample]:
    """A seeded random subset that keeps the original order (so the label distribution is preserved)."""
    keep = subsample_rows(len(samples), limit, seed)
    return samples if keep is None else [samples[i] for i in keep]


def cap_rows(targets: np.ndarray, limit: Optional[int], seed: int) -> Optional[np.ndarray]:
    """Positions keeping at most `limit` per target behavior (seeded), in order (None: keep all)."""
    if limit is None:
        return None
    rng = np.random.default_rng(seed)
    codes, _ = pd.factorize(targets)  # behaviors in order of first appearance: the order their draws are made in
    members = np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(codes))]
    keep = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        group = members[lo:hi]
        keep.extend(group.tolist() if len(group) <= limit else rng.choice(group, size=limit, replace=False).tolist())
    return np.sort(np.array(keep, dtype=int))


def cap_per_behavior(samples: list[Sample], limit: Optional[int], seed: int) -> list[Sample]:
    """At most `limit` samples per target behavior (seeded), keeping the original order: k-shot training sets."""
    keep = cap_rows(np.array([s.target for s in samples], dtype=object), limit, seed)
    return samples if keep is None else [samples[i] for i in keep]


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


def build_vocab(events: pd.DataFrame, train: list[Sample] | np.ndarray, anchor_threshold: float) -> BehaviorVocab:
    """Anchors are behaviors whose share of training targets exceeds `anchor_threshold`; all others are tail.
    `train`: the training samples, or their target names."""
    targets = train if isinstance(train, np.ndarray) else [s.target for s in train]
    counts = pd.Series(targets, dtype=object).value_counts()
    total = max(1, int(counts.sum()))
    all_names = set(events["behavior"].unique())
    names = sorted(all_names, key=lambda n: (-int(counts.get(n, 0)), n))
    anchors = {n for n in names if counts.get(n, 0) / total > anchor_threshold}
    categories = {}
    if events["category"].notna().any():
        categories = events.drop_duplicates("behavior").set_index("behavior")["category"].to_dict()
    return BehaviorVocab(names=names, train_counts={n: int(counts.get(n, 0)) for n in names},
                         categories=categories, anchors=anchors, anchor_threshold=anchor_threshold)
