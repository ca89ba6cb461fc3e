"""The bar schema, its validation, and gap detection.

A bar is one row: ``symbol, ts, open, high, low, close, volume``. ``ts`` is the bar's open
time in UTC; the bar is complete (its close known) at ``ts + bar interval``. Naive
timestamps in input files are read as UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from signalops.calendar import MarketCalendar
from signalops.errors import BadInputError

BAR_COLUMNS = ("symbol", "ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
NUMERIC_COLUMNS = (*PRICE_COLUMNS, "volume")
MAX_EXAMPLES = 5


class BarValidationError(BadInputError):
    """A batch of bars is invalid; ``problems`` lists every problem found, each with its place."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(
            f"{len(problems)} problem(s) in bars from {source}; nothing was written:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )


@dataclass(frozen=True)
class Gap:
    """Consecutive missing bars of one symbol: ``missing`` bars from ``first_missing`` on."""

    symbol: str
    first_missing: datetime
    last_missing: datetime
    missing: int

    def __str__(self) -> str:
        return (
            f"{self.symbol}: {self.missing} bar(s) missing "
            f"{self.first_missing.isoformat()} .. {self.last_missing.isoformat()}"
        )


def empty_bars() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in NUMERIC_COLUMNS})
    frame.insert(0, "ts", pd.Series(dtype="datetime64[ns, UTC]"))
    frame.insert(0, "symbol", pd.Series(dtype="object"))
    return frame


TS_ALIASES = ("timestamp", "datetime", "date", "time", "", "unnamed: 0")
"""Names a timestamp column may have instead of ``ts`` (the last two: a CSV written from a
pandas index, as many data packages ship them)."""


def validate_bars(
    raw: pd.DataFrame,
    source: str,
    row_label: Callable[[int], str] = lambda i: f"row {i + 1}",
    default_symbol: str | None = None,
) -> pd.DataFrame:
    """Check and normalize a raw batch; return it in the canonical schema, sorted.

    ``row_label`` turns a 0-based row position into a human place ("line 7"). A batch
    without a ``symbol`` column is one symbol's, ``default_symbol`` (a file's name), and its
    time column may be named as in ``TS_ALIASES``.
    Raises :class:`BarValidationError` listing every problem, so the caller writes nothing.
    """
    frame = raw.rename(columns=lambda c: str(c).strip().lower())
    if "ts" not in frame.columns:
        alias = next((a for a in TS_ALIASES if a in frame.columns), None)
        if alias is not None:
            frame = frame.rename(columns={alias: "ts"})
    if "symbol" not in frame.columns and default_symbol:
        frame.insert(0, "symbol", default_symbol)
    missing = [c for c in BAR_COLUMNS if c not in frame.columns]
    if missing:
        raise BarValidationError(
            source,
            [f"missing column(s) {missing}; found {list(map(str, raw.columns))}"],
        )
    frame = frame.loc[:, list(BAR_COLUMNS)].reset_index(drop=True)
    problems: list[str] = []

    def report(mask: np.ndarray | pd.Series, column: str, what: str, show: pd.Series) -> None:
        positions = np.flatnonzero(np.asarray(mask))
        if len(positions) == 0:
            return
        examples = ", ".join(
            f"{row_label(int(p))} ({show.iloc[p]!r})" for p in positions[:MAX_EXAMPLES]
        )
        more = f" and {len(positions) - MAX_EXAMPLES} more" if len(positions) > MAX_EXAMPLES else ""
        problems.append(f"column '{column}': {what} at {examples}{more}")

    symbol = frame["symbol"]
    bad_symbol = symbol.isna() | (symbol.astype(str).str.strip() == "")
    report(bad_symbol, "symbol", "empty symbol", symbol)
    frame["symbol"] = symbol.astype(str).str.strip()

    ts = _parse_ts(frame["ts"])
    report(ts.isna(), "ts", "unparsable or empty timestamp", frame["ts"])

    for column in NUMERIC_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
        bad = ~np.isfinite(values.to_numpy())
        report(bad, column, "not a finite number", frame[column])
        frame[column] = values
    frame["ts"] = ts

    if not problems:
        o, h, lo, c, v = (frame[k].to_numpy() for k in NUMERIC_COLUMNS)
        prices = frame[list(PRICE_COLUMNS)].to_numpy()
        report((prices <= 0).any(axis=1), "open/high/low/close", "price <= 0", frame["close"])
        report(
            h < lo,
            "high",
            "high < low",
            frame["high"].astype(str) + " < " + frame["low"].astype(str),
        )
        report(
            (h >= lo) & (h < np.maximum(o, c)), "high", "high below open or close", frame["high"]
        )
        report((h >= lo) & (lo > np.minimum(o, c)), "low", "low above open or close", frame["low"])
        report(v < 0, "volume", "negative volume", frame["volume"])
        dup = frame.duplicated(["symbol", "ts"], keep=False).to_numpy()
        report(
            dup,
            "symbol,ts",
            "duplicate (symbol, ts) in one batch",
            frame["symbol"] + "@" + frame["ts"].astype(str),
        )

    if problems:
        raise BarValidationError(source, problems)
    return frame.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)


def _parse_ts(values: pd.Series) -> pd.Series:
    """ISO-8601 text or datetimes to UTC; naive values are taken as UTC, offsets converted."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return pd.to_datetime(values, utc=True)
    return pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")


def find_gaps(
    bars: pd.DataFrame,
    bar: timedelta,
    start: datetime,
    end: datetime,
    symbols: list[str],
    calendar: MarketCalendar | None = None,
) -> list[Gap]:
    """Missing bars per symbol on the grid of ``[start, end)`` that the market calendar
    expects (default: around the clock); nothing is invented."""
    step = pd.Timedelta(bar)
    first = pd.Timestamp(start).tz_convert("UTC").ceil(step)
    grid = pd.date_range(first, pd.Timestamp(end).tz_convert("UTC"), freq=step, inclusive="left")
    if calendar is not None and len(grid):
        grid = grid[calendar.is_open(grid)]
    gaps: list[Gap] = []
    if len(grid) == 0:
        return gaps
    by_symbol = {s: g["ts"] for s, g in bars.groupby("symbol")} if len(bars) else {}
    for symbol in symbols:
        present = by_symbol.get(symbol, pd.Series(dtype="datetime64[ns, UTC]"))
        missing = grid[~grid.isin(present)]
        if len(missing) == 0:
            continue
        # Split the missing stamps into runs of consecutive grid points.
        idx = grid.get_indexer(missing)
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(np.arange(len(idx)), breaks):
            gaps.append(
                Gap(
                    symbol,
                    missing[run[0]].to_pydatetime(),
                    missing[run[-1]].to_pydatetime(),
                    len(run),
                )
            )
    return gaps
