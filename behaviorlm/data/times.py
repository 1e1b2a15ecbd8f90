"""Reading a log's time column: one format per column, or a clear refusal.

A time written `04/01/2024` is April 1 or 4 January depending on who wrote it; parsing each value on its own (pandas'
`format="mixed"`) silently mixes the two. `parse_times` accepts a column only when one reading is certain: ISO 8601,
a single format pandas can guess that reads every value (and no other format reads any value differently), an
explicit `data.time_format` or `data.dayfirst`, or Unix epoch numbers with `data.time_unit`.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from behaviorlm.data.errors import DataError, line_number

ISO_FORMAT = "ISO8601"
_OFFSET = r"\s*(?:Z|[+-]\d{2}:?\d{2})$"  # a trailing UTC offset or Z marker


def _wall_clock(value) -> pd.Timestamp:
    """One value as the wall clock that was written (an offset or zone, if any, is dropped, not converted)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(None) if stamp.tzinfo is not None else stamp


def _naive(times: pd.Series) -> pd.Series:
    """Drop a (single) zone keeping the written wall clock: weekday and hour are what the prompt shows."""
    return times.dt.tz_localize(None) if getattr(times.dt, "tz", None) is not None else times


def _with_format(values: pd.Series, fmt: str) -> pd.Series:
    """`values` parsed with one format (NaT where a value does not match); offsets keep their wall clock."""
    if fmt != ISO_FORMAT and "%z" not in fmt and "%f" not in fmt:
        # Arrow's strptime is ~20x faster than pandas' on a non-ISO format; it is trusted only when it reads
        # every value to a four-digit year (it takes '24' for %Y), else pandas decides and names the odd value.
        import pyarrow as pa
        import pyarrow.compute as pc

        times = pc.strptime(pa.array(values, type=pa.string(), from_pandas=True), format=fmt, unit="us",
                            error_is_null=True)
        if times.null_count == 0 and pc.min(pc.year(times)).as_py() >= 1000:
            return pd.Series(times.to_numpy(zero_copy_only=False), index=values.index)
    try:
        return _naive(pd.to_datetime(values, format=fmt, errors="coerce"))
    except ValueError:  # several different offsets: drop them, keep each value's written wall clock
        stripped = values.str.replace(_OFFSET, "", regex=True)
        return pd.to_datetime(stripped, format=fmt.replace("%z", "").rstrip() if fmt != ISO_FORMAT else fmt,
                              errors="coerce")


def _guess_formats(values: pd.Series, dayfirst: Optional[bool]) -> list[str]:
    """strftime formats that pandas guesses for a spread of the column's distinct values, in both day orders
    (or the one `dayfirst` names); ISO-like year-first readings with the day before the month are never meant."""
    import warnings

    from pandas.tseries.api import guess_datetime_format

    distinct = pd.unique(values.dropna())
    spread = list(distinct[:40]) + list(distinct[::max(1, len(distinct) // 40)])
    orders = (False, True) if dayfirst is None else (bool(dayfirst),)
    found: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Parsing dates in %d/%m/%Y format when dayfirst=False": we check below
        for value in spread:
            for order in orders:
                fmt = guess_datetime_format(str(value), dayfirst=order)
                if fmt is None or fmt in found or fmt.startswith("%Y") and fmt.find("%d") < fmt.find("%m"):
                    continue
                day_before_month = fmt.find("%d") < fmt.find("%m")
                if dayfirst is not None and "%d" in fmt and "%m" in fmt and day_before_month != dayfirst:
                    continue
                found.append(fmt)
    return found


def parse_times(values: pd.Series, source: str, column: str, unit: Optional[str] = None,
                time_format: Optional[str] = None, dayfirst: Optional[bool] = None) -> pd.Series:
    """Parse event times to naive wall-clock timestamps, refusing any reading that could be wrong.

    `unit` (s | ms) reads Unix epoch numbers (UTC); `time_format` is a strftime string every value must match.
    Otherwise the column must follow one format: ISO 8601 (offsets allowed: weekday and hour are what the prompt
    shows, so each value keeps its written wall clock), or a single format pandas can guess. A column that two
    day orders read differently (04/01/2024: April 1 or January 4?) or that mixes formats stops with one line
    naming the first such line, both readings and the key to set (`data.time_format`, `data.dayfirst`)."""
    if pd.api.types.is_datetime64_any_dtype(values):  # a Parquet timestamp column is already parsed
        return _naive(values)
    if unit is not None:
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna()
        if bad.any():
            first = bad.idxmax()
            raise DataError(f"data file '{source}': column '{column}' line {line_number(values, first)}: "
                            f"{values.loc[first]!r} is not a number of {unit} since 1970 (data.time_unit={unit})")
        return pd.to_datetime(numbers, unit=unit)
    values = values.astype("string")
    present = values.notna()
    if not present.any():
        raise DataError(f"data file '{source}': column '{column}' holds no time at all")
    if time_format:
        times = _with_format(values, time_format)
        bad = present & times.isna()
        if bad.any():
            first = bad.idxmax()
            raise DataError(f"data file '{source}': column '{column}' line {line_number(values, first)}: "
                            f"{values.loc[first]!r} does not match data.time_format={time_format!r}")
        return times
    if not present.all():
        first = (~present).idxmax()
        raise DataError(f"data file '{source}': column '{column}' line {line_number(values, first)}: empty time")
    # A format that misses a value of a spread sample is out without parsing the whole column (a mismatching
    # value takes pandas' slow path, so trying every candidate on a million rows would cost seconds each).
    rows = np.unique(np.r_[np.arange(min(len(values), 1000)), np.linspace(0, len(values) - 1, 1000).astype(int)])
    sample = values.iloc[rows]

    def reads_all(fmt: str, column_values: pd.Series) -> pd.Series | None:
        times = _with_format(column_values, fmt)
        return None if times.isna().any() else times

    # ISO 8601 first: unambiguous by its standard, and the common export format.
    if reads_all(ISO_FORMAT, sample) is not None and (iso := reads_all(ISO_FORMAT, values)) is not None:
        return iso
    candidates = _guess_formats(values, dayfirst)
    fits = {fmt: times for fmt in candidates
            if reads_all(fmt, sample) is not None and (times := reads_all(fmt, values)) is not None}
    if fits:
        (chosen_fmt, chosen), *others = fits.items()
        for other_fmt, other in others:
            differ = chosen.ne(other)
            if differ.any():
                first = differ.idxmax()
                raise DataError(
                    f"data file '{source}': column '{column}' is ambiguous: line {line_number(values, first)} "
                    f"{values.loc[first]!r} reads as {chosen.loc[first]} ({chosen_fmt}) or {other.loc[first]} "
                    f"({other_fmt}); set data.time_format (e.g. data.time_format='{chosen_fmt}') or "
                    "data.dayfirst=true|false")
        return chosen
    if not candidates and dayfirst is None:
        return _by_value(values, source, column)
    # No single format reads every value: name the first value that the best-fitting format misses.
    readings = {fmt: _with_format(values, fmt) for fmt in [ISO_FORMAT, *candidates]}
    best_fmt = max(readings, key=lambda fmt: int(readings[fmt].notna().sum()))
    best = readings[best_fmt]
    first = best.isna().idxmax()
    value = values.loc[first]
    if best.notna().any() and _guess_formats(values.loc[[first]], dayfirst):
        example = best.notna().idxmax()
        raise DataError(f"data file '{source}': column '{column}' mixes time formats: line "
                        f"{line_number(values, example)} {values.loc[example]!r} reads as {best_fmt} (as "
                        f"{int(best.notna().sum())} of {len(values)} values do), line {line_number(values, first)} "
                        f"{value!r} does not; write the column in one format or set data.time_format")
    raise DataError(f"data file '{source}': column '{column}' line {line_number(values, first)}: cannot parse "
                    f"{value!r} as a time{_time_hint(value)}")


def _time_hint(value) -> str:
    if str(value).strip().isdigit():
        return " (Unix epoch numbers: set data.time_unit=s or data.time_unit=ms)"
    return " (set data.time_format to its strftime format)"


def _by_value(values: pd.Series, source: str, column: str) -> pd.Series:
    """A format pandas cannot name (e.g. 'Tue Apr 03 18:00:09 +0000 2012'): each distinct value read by dateutil
    in both day orders, accepted only where the two agree."""
    from dateutil import parser

    readings = {}
    for value in pd.unique(values.dropna()):
        try:
            month_first = _wall_clock(parser.parse(value, dayfirst=False))
            day_first = _wall_clock(parser.parse(value, dayfirst=True))
        except (ValueError, OverflowError):
            first = values.eq(value).idxmax()
            raise DataError(f"data file '{source}': column '{column}' line {line_number(values, first)}: cannot parse "
                            f"{value!r} as a time{_time_hint(value)}") from None
        if month_first != day_first:
            first = values.eq(value).idxmax()
            raise DataError(f"data file '{source}': column '{column}' is ambiguous: line {line_number(values, first)} "
                            f"{value!r} reads as {month_first} (month first) or {day_first} (day first); set "
                            "data.time_format or data.dayfirst=true|false")
        readings[value] = month_first
    return pd.to_datetime(values.map(readings))
