"""Real OHLCV that a PyPI package ships (``backtesting``: daily GOOG 2004-2013, hourly EURUSD
2017-2018), read through the project's own CSV source. Nothing is downloaded or committed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd


def real_csv(name: str) -> Path:
    """Path of a data file shipped by ``backtesting`` (``GOOG.csv``, ``EURUSD.csv``)."""
    import backtesting

    path = Path(backtesting.__file__).parent / "test" / name
    assert path.is_file(), f"{path} is missing: is the test dependency backtesting installed?"
    return path


def real_bars(name: str) -> pd.DataFrame:
    """The file's bars in the canonical schema (symbol from the file name)."""
    from signalops.data.sources import FileSource

    source = FileSource(str(real_csv(name)), "csv")
    return source.fetch(datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
