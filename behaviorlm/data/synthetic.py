"""A deterministic generator of long-tailed behavior logs with categories and a learnable sequential rule.

Behaviors have Zipf-distributed popularity (a few anchors, a long tail). Each behavior has a successor inside its
own category; with probability `rule_strength` a user's next behavior is the successor of the current one,
otherwise a popularity draw. A model that reads the last behavior can therefore be far better than the
most-popular guess, and its mistakes tend to stay inside a category, which is what contrastive selection exploits.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORY_NAMES = ("Food", "Travel", "Sport", "Work", "Home", "Shop", "Night", "Art", "Health", "Study")
PLACE_NAMES = ("Cafe", "Station", "Club", "Market", "Hall", "Park", "Studio", "Corner", "Tower", "Garden",
               "Bridge", "Lounge", "Center", "Yard", "Pier", "Court")


def generate_synthetic_log(n_users: int = 120, events_per_user: int = 40, n_categories: int = 4,
                           behaviors_per_category: int = 6, zipf_exponent: float = 1.3, rule_strength: float = 0.9,
                           seed: int = 0) -> pd.DataFrame:
    """Return a canonical event frame (user, time, behavior, category); the same seed gives the same log."""
    if not 1 <= n_categories <= len(CATEGORY_NAMES) or not 1 <= behaviors_per_category <= len(PLACE_NAMES):
        raise ValueError(f"synthetic data supports 1..{len(CATEGORY_NAMES)} categories and "
                         f"1..{len(PLACE_NAMES)} behaviors per category")
    rng = np.random.default_rng(seed)
    names, categories = [], []
    for c in range(n_categories):
        for b in range(behaviors_per_category):
            names.append(f"{CATEGORY_NAMES[c]} {PLACE_NAMES[b]}")
            categories.append(CATEGORY_NAMES[c])
    n = len(names)
    popularity = 1.0 / np.arange(1, n + 1) ** zipf_exponent
    popularity = popularity[rng.permutation(n)]
    popularity /= popularity.sum()
    category_ids = np.repeat(np.arange(n_categories), behaviors_per_category)
    successor = np.empty(n, dtype=int)
    for i in range(n):
        # Successors favour popular behaviors of the same category, so the rule keeps the long tail long.
        same = np.flatnonzero((category_ids == category_ids[i]) & (np.arange(n) != i))
        pool = same if len(same) else np.arange(n)
        weights = popularity[pool] / popularity[pool].sum()
        successor[i] = rng.choice(pool, p=weights)

    rows = []
    start = pd.Timestamp("2024-01-01 06:00")
    for u in range(n_users):
        current = rng.choice(n, p=popularity)
        clock = start + pd.Timedelta(hours=int(rng.integers(0, 24 * 7)))
        for _ in range(events_per_user):
            rows.append((f"u{u:04d}", clock, names[current], categories[current]))
            current = successor[current] if rng.random() < rule_strength else rng.choice(n, p=popularity)
            clock = clock + pd.Timedelta(minutes=int(rng.integers(30, 600)))
    return pd.DataFrame(rows, columns=["user", "time", "behavior", "category"])
