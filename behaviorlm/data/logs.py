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

from behaviorlm.config import CHOICES
from behaviorlm.data.errors import DataError, line_number
from behaviorlm.data.times import parse_times

log = logging.getLogger(__name__)

CANONICAL_COLUMNS = ["user", "time", "behavior", "category"]
UNKNOWN_CATEGORY = "Unknown"


COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")  # suffixes pandas decompresses; _open_binary all but .zst


def _open_binary(path: Path):
    """The file's bytes, decompressed by suffix (the compressions pandas infers; .zst only through pandas)."""
    import bz2
    import gzip
    import lzma

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    return opener(path, "rb")


def _undecodable_line(path: Path, encoding: str) -> str:
    """Where a file stops being `encoding`: 'line N (byte 0xXX at column C)', found by reading it line by line."""
    try:
        with _open_binary(path) as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    raw.decode(encoding)
                except UnicodeDecodeError as err:
                    return f"line {number} (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
    except OSError:
        pass
    return "a line this reader could not locate"


def _header(path: Path, kind: str, encoding: str) -> list[str]:
    """The header's names as written: pandas renames a repeated name ('b' -> 'b.1') without a word."""
    first = pd.read_csv(path, sep="\t" if kind == ".tsv" else ",", header=None, nrows=1, dtype=str,
                        keep_default_na=False, encoding=encoding, encoding_errors="strict")
    return [str(name) for name in first.iloc[0].tolist()] if len(first) else []


def _read_jsonl(path: Path, encoding: str) -> pd.DataFrame:
    """One JSON object a line; nested objects become dotted columns ({"user": {"id": 1}} -> 'user.id')."""
    import json

    records = []
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            text = raw.decode(encoding).strip()
            if not text:
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as err:
                raise DataError(f"data file '{path}' line {number} is not JSON: {err.msg} at column {err.colno}") \
                    from None
            if not isinstance(record, dict):
                raise DataError(f"data file '{path}' line {number} is a JSON {type(record).__name__}, not an "
                                "object with named fields")
            records.append(record)
    if not records:
        raise DataError(f"data file '{path}' has no JSON records")
    return pd.json_normalize(records, sep=".")


def _read_table(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """Read CSV, Parquet or JSONL (optionally compressed) as strings, with clear errors."""
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    if path.is_dir():
        raise DataError(f"data file '{path}' is a directory: data.path must name one log file (.csv, .tsv, "
                        ".jsonl or .parquet, optionally .gz)")
    if path.stat().st_size == 0:
        raise DataError(f"data file '{path}' is empty (0 bytes)")
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in COMPRESSIONS]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".csv", ".tsv", ".txt"):
            names = _header(path, kind, encoding)
            repeated = sorted({name for name in names if names.count(name) > 1})
            if repeated:
                raise DataError(f"data file '{path}': the header repeats column name(s) {repeated}; every column "
                                "needs its own name")
            options = dict(sep="\t" if kind == ".tsv" else ",", dtype=str, keep_default_na=False, na_values=[""],
                           encoding=encoding, encoding_errors="strict")
            try:  # the pyarrow engine reads several times faster than the C engine on large logs
                frame = pd.read_csv(path, engine="pyarrow", **options)
            except ValueError as err:
                if "invalid UTF8" in str(err):  # Arrow's word for a decoding error
                    raise UnicodeDecodeError(encoding, b"", 0, 1, str(err)) from None
                raise
        elif kind in (".jsonl", ".ndjson"):
            frame = _read_jsonl(path, encoding)
        elif kind == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"data file '{path}': unknown format '{kind or path.name}' (use .csv, .tsv, .jsonl or "
                            ".parquet, optionally .gz)")
    except UnicodeDecodeError:
        raise DataError(f"data file '{path}' is not {encoding} text at {_undecodable_line(path, encoding)}; set "
                        "data.encoding (e.g. data.encoding=latin-1)") from None
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
    return f"line {line_number(frame, index)}"


DUPLICATE_POLICIES = CHOICES["data.duplicates"]  # the closed choices live in config.CHOICES


def canonicalize(frame: pd.DataFrame, source: str, user: str, time: str, behavior: str,
                 category: Optional[str], time_unit: Optional[str] = None,
                 duplicates: str = "drop", time_format: Optional[str] = None,
                 dayfirst: Optional[bool] = None) -> pd.DataFrame:
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
        "time": parse_times(frame[time], source, time, time_unit, time_format, dayfirst).to_numpy(),
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
                      time_unit: Optional[str] = None, duplicates: str = "drop", time_format: Optional[str] = None,
                      dayfirst: Optional[bool] = None, encoding: str = "utf-8") -> pd.DataFrame:
    """Read a user's own log (CSV, Parquet, JSONL) into the canonical frame, sorted by user and time.

    Events of one user at the same time keep their order in the file (a stable sort): a log's own order is the
    only evidence of which came first."""
    path = Path(path)
    frame = _read_table(path, encoding)
    events = canonicalize(frame, str(path), user, time, behavior, category, time_unit, duplicates, time_format,
                          dayfirst)
    events = fill_categories(events, str(path))
    check_times(events, str(path), time)
    return events.sort_values(["user", "time"], kind="stable").reset_index(drop=True)


def check_times(events: pd.DataFrame, source: str, column: str) -> None:
    """Refuse a log that time cannot order; log its span (a misread date shows here first) and its ties."""
    first, last = events["time"].min(), events["time"].max()
    if len(events) > 1 and first == last:
        raise DataError(f"data file '{source}': every event has the same time ({first}) in column '{column}': "
                        "the log cannot be ordered or split by time")
    tied = int(events.duplicated(subset=["user", "time"], keep=False).sum())
    log.info("data file '%s': %d events from %s to %s%s", source, len(events), first, last,
             f"; {tied} events share their user's timestamp with another and keep their file order" if tied else "")
