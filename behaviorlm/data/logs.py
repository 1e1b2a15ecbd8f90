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
    if path.is_dir():
        raise DataError(f"data file '{path}' is a directory: data.path must name one log file (.csv, .tsv, "
                        ".jsonl or .parquet, optionally .gz)")
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


TIME_UNITS = ("s", "ms")
DUPLICATE_POLICIES = ("drop", "keep", "error")


def _line(values: pd.Series, index) -> int:
    return values.index.get_loc(index) + 2  # +1 for the header line, +1 because people count lines from 1


def _wall_clock(value) -> pd.Timestamp:
    """One value as the wall clock that was written (an offset or zone, if any, is dropped, not converted)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def parse_times(values: pd.Series, source: str, column: str, unit: Optional[str] = None) -> pd.Series:
    """Parse event times to naive wall-clock timestamps; the first unparseable value is an error.

    Weekday and hour are what the prompt shows, so a value written with an offset keeps its written wall clock;
    a column mixing values with and without offsets is parsed value by value the same way. `unit` (s | ms) reads
    Unix epoch numbers (UTC)."""
    if unit is not None:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna()
        if bad.any():
            first = bad.idxmax()
            raise DataError(f"data file '{source}': column '{column}' line {_line(values, first)}: "
                            f"{values.loc[first]!r} is not a number of {unit} since 1970 (data.time_unit={unit})")
        return pd.to_datetime(numbers, unit=unit)
    try:
        times = pd.to_datetime(values, errors="coerce", format="mixed")
        if getattr(times.dt, "tz", None) is not None:
            times = times.dt.tz_localize(None)
    except (ValueError, TypeError):  # offsets mixed with naive values, or several offsets: value by value
        parsed = {}
        for value in pd.unique(values.dropna()):
            try:
                parsed[value] = _wall_clock(value)
            except (ValueError, TypeError):
                parsed[value] = pd.NaT
        times = pd.to_datetime(values.map(parsed))
    bad = times.isna()
    if bad.any():
        first = bad.idxmax()
        value = values.loc[first]
        hint = ""
        if isinstance(value, str) and value.strip().isdigit():
            hint = " (Unix epoch numbers: set data.time_unit=s or data.time_unit=ms)"
        raise DataError(f"data file '{source}': column '{column}' line {_line(values, first)}: "
                        f"cannot parse {value!r} as a time{hint}")
    return times


def canonicalize(frame: pd.DataFrame, source: str, user: str, time: str, behavior: str,
                 category: Optional[str], time_unit: Optional[str] = None,
                 duplicates: str = "drop") -> pd.DataFrame:
    """Map a raw table onto the canonical columns, validating every field it uses.

    `duplicates` decides what an exact repeat of (user, time, behavior) does: real check-in logs hold double
    check-ins (the same second, the same venue, two event ids), so `drop` (default) keeps the first and counts the
    rest, `keep` keeps all, `error` stops at the first one."""
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
        "time": parse_times(frame[time], source, time, time_unit).to_numpy(),
        "behavior": stripped.astype(str).to_numpy(),
    })
    if has_category:
        cats = frame[category].astype("string").str.strip()
        out["category"] = cats.where(cats.notna() & (cats != ""), None).astype(object).to_numpy()
    else:
        out["category"] = None
    if duplicates not in DUPLICATE_POLICIES:
        raise DataError(f"data.duplicates={duplicates!r} is not one of {', '.join(DUPLICATE_POLICIES)}")
    duplicated = out.duplicated(subset=["user", "time", "behavior"])
    if duplicated.any() and duplicates == "error":
        first = int(duplicated.to_numpy().argmax())
        row = out.iloc[first]
        raise DataError(f"data file '{source}': line {first + 2} duplicates an earlier event (user {row.user!r}, "
                        f"time {row.time}, behavior {row.behavior!r}) and data.duplicates=error")
    if duplicated.any() and duplicates == "drop":
        log.warning("data file '%s': dropped %d exact duplicate events (same user, time and behavior; "
                    "data.duplicates=drop), %.2f%% of the rows", source, int(duplicated.sum()),
                    100 * float(duplicated.mean()))
        out = out[~duplicated.to_numpy()].reset_index(drop=True)
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
                      behavior: str = "behavior", category: Optional[str] = "category",
                      time_unit: Optional[str] = None, duplicates: str = "drop") -> pd.DataFrame:
    """Read a user's own log (CSV, Parquet, JSONL) into the canonical frame, sorted by user and time."""
    path = Path(path)
    frame = _read_table(path)
    events = canonicalize(frame, str(path), user, time, behavior, category, time_unit, duplicates)
    events = fill_categories(events, str(path))
    return events.sort_values(["user", "time"], kind="stable").reset_index(drop=True)
