"""Queries on ``bars``: the market data, one row per (symbol, bar time).

Reads take a connection; ``upsert_bars`` takes the engine and writes in one transaction.
``Warehouse`` keeps its bar methods (``read_bars``, ``upsert_bars``, ...) on top of these.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from signalops.data.bars import BAR_COLUMNS, NUMERIC_COLUMNS, empty_bars
from signalops.warehouse.core import to_utc, to_utc_series, upsert
from signalops.warehouse.schema import bars_table

log = logging.getLogger(__name__)

KEY = ("symbol", "ts")


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int

    @property
    def written(self) -> int:
        return self.inserted + self.updated


def upsert_bars(engine: sa.Engine, bars: pd.DataFrame, source: str) -> UpsertResult:
    """Insert new bars, overwrite changed ones (late corrections), leave equal ones alone.

    Runs in one transaction: either the whole batch lands or nothing does.
    """
    if bars.empty:
        return UpsertResult(0, 0, 0)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        existing = read(
            conn,
            sorted(bars["symbol"].unique()),
            bars["ts"].min(),
            bars["ts"].max(),
            inclusive=True,
        )
        merged = bars.merge(
            existing, on=["symbol", "ts"], how="left", suffixes=("", "_old"), indicator=True
        )
        is_new = (merged["_merge"] == "left_only").to_numpy()
        same = np.ones(len(merged), dtype=bool)
        for c in NUMERIC_COLUMNS:
            same &= merged[c].to_numpy() == merged[f"{c}_old"].to_numpy()
        changed = ~is_new & ~same
        todo = merged.loc[is_new | changed, list(BAR_COLUMNS)]
        rows = _records(todo, source=source, ingested_at=now)
        upsert(conn, bars_table, rows, KEY, (*NUMERIC_COLUMNS, "source", "ingested_at"))
    result = UpsertResult(int(is_new.sum()), int(changed.sum()), int((~is_new & same).sum()))
    log.info(
        "bars upsert: %d inserted, %d updated (late corrections), %d unchanged",
        result.inserted,
        result.updated,
        result.unchanged,
    )
    return result


def read(
    conn: sa.Connection,
    symbols: list[str] | None,
    start: datetime | pd.Timestamp | None,
    end: datetime | pd.Timestamp | None,
    inclusive: bool = False,
) -> pd.DataFrame:
    """Bars with ``start <= ts < end`` (``<= end`` when ``inclusive``; open bounds when
    None), sorted by symbol and ts."""
    t = bars_table
    query = sa.select(*(t.c[c] for c in BAR_COLUMNS)).order_by(t.c.symbol, t.c.ts)
    if symbols:
        query = query.where(t.c.symbol.in_(list(symbols)))
    if start is not None:
        query = query.where(t.c.ts >= to_utc(start))
    if end is not None:
        query = query.where(t.c.ts <= to_utc(end) if inclusive else t.c.ts < to_utc(end))
    rows = conn.execute(query).all()
    if not rows:
        return empty_bars()
    frame = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
    frame["ts"] = to_utc_series(frame["ts"])
    for c in NUMERIC_COLUMNS:
        frame[c] = frame[c].astype("float64")
    return frame


def read_around(
    conn: sa.Connection,
    symbols: list[str],
    start: datetime,
    end: datetime,
    before: int,
    after: int,
) -> pd.DataFrame:
    """Each symbol's bars in ``[start, end)`` plus its ``before`` bars before ``start``
    and its ``after`` bars from ``end`` on: lookbacks counted in bars of the series,
    whatever the calendar (weekends, holidays, sessions) puts between them."""
    t = bars_table
    frames = []
    for symbol in symbols:
        lower = to_utc(start)
        if before > 0:
            first = conn.execute(
                sa.select(t.c.ts)
                .where(t.c.symbol == symbol, t.c.ts < to_utc(start))
                .order_by(t.c.ts.desc())
                .limit(before)
            ).all()
            if first:
                lower = to_utc(to_utc_series(pd.Series([first[-1][0]])).iloc[0])
        upper, inclusive = to_utc(end), False
        if after > 0:
            last = conn.execute(
                sa.select(t.c.ts)
                .where(t.c.symbol == symbol, t.c.ts >= to_utc(end))
                .order_by(t.c.ts)
                .limit(after)
            ).all()
            if last:
                upper = to_utc(to_utc_series(pd.Series([last[-1][0]])).iloc[0])
                inclusive = True
        frames.append(read(conn, [symbol], lower, upper, inclusive=inclusive))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else empty_bars()


def count_before(conn: sa.Connection, symbols: list[str], before: datetime) -> dict[str, Any]:
    """Per symbol: how many bars precede ``before`` and the first bar's ts (ISO text)."""
    t = bars_table
    out: dict[str, Any] = {}
    for symbol in symbols:
        n = conn.execute(
            sa.select(sa.func.count()).where(t.c.symbol == symbol, t.c.ts < to_utc(before))
        ).scalar()
        first = conn.execute(sa.select(sa.func.min(t.c.ts)).where(t.c.symbol == symbol)).scalar()
        out[symbol] = {
            "bars": int(n or 0),
            "first_ts": None
            if first is None
            else to_utc_series(pd.Series([first])).iloc[0].isoformat(),
        }
    return out


def stats(conn: sa.Connection) -> pd.DataFrame:
    """Per symbol: number of bars, first and last ts."""
    t = bars_table
    query = (
        sa.select(
            t.c.symbol,
            sa.func.count().label("bars"),
            sa.func.min(t.c.ts).label("first_ts"),
            sa.func.max(t.c.ts).label("last_ts"),
        )
        .group_by(t.c.symbol)
        .order_by(t.c.symbol)
    )
    frame = pd.DataFrame(
        conn.execute(query).all(), columns=["symbol", "bars", "first_ts", "last_ts"]
    )
    for c in ("first_ts", "last_ts"):
        frame[c] = to_utc_series(frame[c])
    return frame


def previous_ts(
    conn: sa.Connection, symbols: list[str], before: datetime
) -> dict[str, pd.Timestamp]:
    """Each symbol's newest bar strictly before ``before`` (symbols without one: absent)."""
    t = bars_table
    query = (
        sa.select(t.c.symbol, sa.func.max(t.c.ts))
        .where(t.c.symbol.in_(symbols), t.c.ts < to_utc(before))
        .group_by(t.c.symbol)
    )
    rows = conn.execute(query).fetchall()
    if not rows:
        return {}
    stamps = to_utc_series(pd.Series([r[1] for r in rows]))
    return {str(r[0]): stamps.iloc[i] for i, r in enumerate(rows)}


def last_ts(conn: sa.Connection) -> pd.Timestamp | None:
    """The newest bar's ts over every symbol (None: no bars)."""
    value = conn.execute(sa.select(sa.func.max(bars_table.c.ts))).scalar()
    return None if value is None else to_utc_series(pd.Series([value])).iloc[0]


def _records(frame: pd.DataFrame, **extra: Any) -> list[dict[str, Any]]:
    out = frame.astype({"ts": "object"}).copy()
    out["ts"] = [ts.to_pydatetime() for ts in frame["ts"]]
    records: list[dict[str, Any]] = out.to_dict("records")
    for record in records:
        record.update(extra)
    return records
