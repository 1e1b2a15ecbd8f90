"""Reading behavior logs: one event per row with a user, a time, a behavior name and optionally a category.

Every reader returns the canonical frame (`user`, `time`, `behavior`, `category`, plus `period` where the source
fixes the split) and every problem in the input becomes one `DataError` line naming the file, the column, the row
and the offending value: a malformed log must never turn into a silently different experiment.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import pandas as pd

log = logging.getLogger(__name__)

CANONICAL_COLUMNS = ["user", "time", "behavior", "category"]
UNKNOWN_CATEGORY = "Unknown"


class DataError(ValueError):
    """The input data cannot be used; the message names the file, column, row and value."""


def _read_table(path: Path) -> pd.DataFrame:
    """Read CSV, Parquet or JSONL (optionally gzip-compressed) as strings, with clear errors."""
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty (0 bytes)")
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".csv", ".tsv", ".txt"):
            frame = pd.read_csv(path, sep="\t" if kind == ".tsv" else ",", dtype=str, keep_default_na=False,
                                na_values=[""], encoding="utf-8", encoding_errors="strict")
        elif kind in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False, encoding="utf-8", encoding_errors="strict")
        elif kind == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"data file '{path}': unknown format '{kind or path.name}' (use .csv, .tsv, .jsonl or "
                            ".parquet, optionally .gz)")
    except UnicodeDecodeError as err:
        raise DataError(f"data file '{path}' is not UTF-8 text: byte 0x{err.object[err.start]:02x} at offset "
                        f"{err.start} cannot be decoded") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"data file '{path}' has no columns (empty or blank)") from None
    except (pd.errors.ParserError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"data file '{path}' cannot be parsed: {str(err).splitlines()[0]}") from None
    if len(frame) == 0:
        raise DataError(f"data file '{path}' has a header but no rows")
    return frame


def _row_label(frame: pd.DataFrame, index) -> str:
    # +2: one for the header line, one because people count lines from 1.
    return f"line {frame.index.get_loc(index) + 2}"


def parse_times(values: pd.Series, source: str, column: str) -> pd.Series:
    """Parse event times to naive wall-clock timestamps; the first unparseable value is an error."""
    times = pd.to_datetime(values, errors="coerce", format="mixed")
    if getattr(times.dt, "tz", None) is not None:
        # Keep the wall clock that was written: weekday and hour are what the prompt shows.
        times = times.dt.tz_localize(None)
    bad = times.isna()
    if bad.any():
        first = bad.idxmax()
        raise DataError(f"data file '{source}': column '{column}' line {values.index.get_loc(first) + 2}: "
                        f"cannot parse {values.loc[first]!r} as a time")
    return times


def canonicalize(frame: pd.DataFrame, source: str, user: str, time: str, behavior: str,
                 category: Optional[str]) -> pd.DataFrame:
    """Map a raw table onto the canonical columns, validating every field it uses."""
    config_keys = {user: "data.columns.user", time: "data.columns.time", behavior: "data.columns.behavior"}
    for column, key in config_keys.items():
        if column not in frame.columns:
            raise DataError(f"data file '{source}': column '{column}' ({key}) not found; the file has columns "
                            f"{list(frame.columns)}")
    has_category = category is not None and category in frame.columns
    if category is not None and not has_category:
        log.warning("data file '%s' has no category column '%s' (data.columns.category): contrastive selection "
                    "and same-category metrics are disabled", source, category)

    users = frame[user]
    if users.isna().any():
        first = users.isna().idxmax()
        raise DataError(f"data file '{source}': column '{user}' {_row_label(frame, first)}: empty user id")
    names = frame[behavior]
    stripped = names.astype("string").str.strip()
    empty = names.isna() | (stripped == "")
    if empty.any():
        first = empty.idxmax()
        raise DataError(f"data file '{source}': column '{behavior}' {_row_label(frame, first)}: empty or NaN "
                        f"behavior name {names.loc[first]!r}")

    out = pd.DataFrame({
        "user": users.astype(str).to_numpy(),
        "time": parse_times(frame[time], source, time).to_numpy(),
        "behavior": stripped.astype(str).to_numpy(),
    })
    if has_category:
        cats = frame[category].astype("string").str.strip()
        out["category"] = cats.where(cats.notna() & (cats != ""), None).astype(object).to_numpy()
    else:
        out["category"] = None
    duplicated = out.duplicated(subset=["user", "time", "behavior"])
    if duplicated.any():
        first = int(duplicated.to_numpy().argmax())
        row = out.iloc[first]
        raise DataError(f"data file '{source}': line {first + 2} duplicates an earlier event (user {row.user!r}, "
                        f"time {row.time}, behavior {row.behavior!r}); remove duplicated rows")
    return out


def fill_categories(events: pd.DataFrame, source: str) -> pd.DataFrame:
    """Give every behavior one category: its most frequent non-empty one (gaps are common in real logs)."""
    if events["category"].isna().all():
        return events
    known = events.dropna(subset=["category"])
    per_behavior = known.groupby("behavior")["category"].agg(lambda s: s.value_counts().index[0])
    filled = events["behavior"].map(per_behavior)
    n_gaps = int(events["category"].isna().sum())
    n_without = int(filled.isna().sum())
    if n_gaps:
        log.warning("data file '%s': %d events have no category; filled from the same behavior's other events "
                    "(%d events of behaviors never categorised become '%s')", source, n_gaps, n_without,
                    UNKNOWN_CATEGORY)
    events = events.copy()
    events["category"] = filled.fillna(UNKNOWN_CATEGORY)
    return events


def read_behavior_log(path: str | Path, user: str = "user_id", time: str = "timestamp",
                      behavior: str = "behavior", category: Optional[str] = "category") -> pd.DataFrame:
    """Read a user's own log (CSV, Parquet, JSONL) into the canonical frame, sorted by user and time."""
    path = Path(path)
    frame = _read_table(path)
    events = fill_categories(canonicalize(frame, str(path), user, time, behavior, category), str(path))
    return events.sort_values(["user", "time"], kind="stable").reset_index(drop=True)
