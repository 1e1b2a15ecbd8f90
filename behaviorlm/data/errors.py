"""The one error type of the data layer, and the line numbers its messages give."""

from __future__ import annotations

import pandas as pd


class DataError(ValueError):
    """The input data cannot be used; the message names the file, column, row and value."""


def line_number(frame: pd.DataFrame | pd.Series, index) -> int:
    """The file line of a row label: +1 for the header line, +1 because people count lines from 1."""
    return frame.index.get_loc(index) + 2
