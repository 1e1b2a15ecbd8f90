"""Foursquare New York check-ins (TSMC2014, GETNext split), embedded in data/foursquare_nyc.

The behavior is the venue-category name (`POI_catname`); one name can carry several category ids, so the name is
the key. The category is the Foursquare root category: the taxonomy file lists categories depth-first, so every id
after a root id belongs to that root. A name resolves by matching the taxonomy's English names first, then through
its most frequent `POI_catid`. The training period is GETNext's validation file and the test period its test file:
a natural held-out future.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from behaviorlm.data.logs import DataError, _read_table, canonicalize

ROOT_CATEGORIES = (
    "Arts & Entertainment", "College & University", "Event", "Food", "Nightlife Spot", "Outdoors & Recreation",
    "Professional & Other Places", "Residence", "Shop & Service", "Travel & Transport",
)
# Names that match neither the 2017 taxonomy's names nor its ids (see data/foursquare_nyc/SOURCE.md).
MANUAL_ROOTS = {"Ferry": "Travel & Transport"}


def read_taxonomy(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """Return (name -> root, id -> root) from the depth-first taxonomy CSV (id, English, French, Italian)."""
    name_to_root: dict[str, str] = {}
    id_to_root: dict[str, str] = {}
    root = None
    with open(path, newline="", encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if len(row) < 2:
                raise DataError(f"taxonomy file '{path}': line {line_no} has {len(row)} fields, expected id and "
                                "English name")
            category_id, english = row[0], row[1].strip()
            if english in ROOT_CATEGORIES:
                root = english
            if root is None:
                raise DataError(f"taxonomy file '{path}': line {line_no} ({english!r}) comes before any root category")
            name_to_root.setdefault(english, root)
            id_to_root[category_id] = root
    return name_to_root, id_to_root


def root_categories(raw: pd.DataFrame, taxonomy_path: str | Path) -> dict[str, str]:
    """Map each behavior name to its root category: by name, then by its majority category id."""
    name_to_root, id_to_root = read_taxonomy(taxonomy_path)
    roots: dict[str, str] = {}
    for name, ids in raw.groupby("POI_catname")["POI_catid"]:
        if name in name_to_root:
            roots[name] = name_to_root[name]
            continue
        for category_id in ids.value_counts().index:
            if category_id in id_to_root:
                roots[name] = id_to_root[category_id]
                break
        else:
            if name not in MANUAL_ROOTS:
                raise DataError(f"taxonomy file '{taxonomy_path}': behavior {name!r} matches no category name or id")
            roots[name] = MANUAL_ROOTS[name]
    return roots


def load_foursquare(train_path: str | Path, test_path: str | Path, taxonomy_path: str | Path) -> pd.DataFrame:
    """Both periods as one canonical frame with a `period` column (train | test)."""
    frames = []
    for period, path in (("train", train_path), ("test", test_path)):
        raw = _read_table(Path(path))
        for column in ("POI_catid", "local_time"):
            if column not in raw.columns:
                raise DataError(f"data file '{path}': column '{column}' not found; is this a GETNext NYC file?")
        raw["period"] = period
        frames.append(raw)
    raw = pd.concat(frames, ignore_index=True)
    roots = root_categories(raw, taxonomy_path)
    raw["root_category"] = raw["POI_catname"].map(roots)
    # local_time is the NYC wall clock despite its "+00:00" suffix; the canonical parser keeps the wall clock.
    events = canonicalize(raw, f"{train_path} + {test_path}", "user_id", "local_time", "POI_catname", "root_category")
    events["period"] = raw["period"].to_numpy()
    return events.sort_values(["user", "time"], kind="stable").reset_index(drop=True)
