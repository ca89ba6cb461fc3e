"""Market data collection: fetch + validate into a staging file, then upsert the warehouse.

The two steps meet through a Parquet file keyed by the window, so the Airflow task that
loads is retried without fetching again, and XCom carries only the path.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from signalops.config import Settings
from signalops.data.bars import find_gaps, validate_bars
from signalops.data.sources import source_from_settings
from signalops.errors import BadInputError
from signalops.files import atomic_write_table
from signalops.warehouse import Warehouse

log = logging.getLogger(__name__)
MAX_GAPS_LOGGED = 20


@dataclass(frozen=True)
class ExtractResult:
    path: str
    source: str
    start: str
    end: str
    rows: int
    symbols: list[str]
    gaps: int
    missing_bars: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CatchUpTooLargeError(BadInputError):
    """The warehouse lags the scheduled interval by more than ``market.catchup_max_bars``."""


def catch_up_start(
    settings: Settings, start: datetime, symbols: list[str] | None = None
) -> datetime:
    """Where a scheduled run starts collecting: its interval's start, or earlier, at the
    bar after the warehouse's newest one, so that the scheduler continues the history
    (``make run``'s, or its own after a pause) with no hole. An empty warehouse: the
    interval plus the history the configured feature set needs before it (its warm-up, in
    bars of the market calendar), so the features run the new bars trigger has rows to
    compute. A lag beyond ``market.catchup_max_bars``: an error that gives the backfill
    command, rather than one very long scheduled run."""
    symbols = list(symbols or settings.market.symbols)
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        newest = warehouse.previous_bar_ts(symbols, start)
    if not newest:
        from signalops.features.definitions import get_feature_set

        warmup = get_feature_set(settings.features.feature_set_version).warmup
        seed = start - settings.market.market_calendar.span_for(warmup)
        log.info(
            "empty warehouse: collecting from %s, room for the feature set's %d-bar warm-up",
            seed.isoformat(),
            warmup,
        )
        return seed
    bar = settings.market.bar
    resume = (min(newest.values()) + bar).to_pydatetime()
    if resume >= start:
        return start
    lag = int((start - resume) / bar)
    limit = settings.market.catchup_max_bars
    if lag > limit:
        raise CatchUpTooLargeError(
            f"the warehouse's newest bar is {resume - bar:%Y-%m-%dT%H:%M:%S%z}, {lag} bars "
            f"before this run's interval ({start.isoformat()}), more than "
            f"market.catchup_max_bars ({limit}). Backfill the hole in one run first: "
            f"airflow dags trigger market_data -c "
            f'\'{{"start": "{resume.isoformat()}", "end": "{start.isoformat()}"}}\''
        )
    log.info(
        "catching up: the warehouse ends at %s; collecting from %s (%d bars before the interval)",
        (resume - bar).isoformat(),
        resume.isoformat(),
        lag,
    )
    return resume


def staging_path(settings: Settings, source: str, start: datetime, end: datetime) -> Path:
    stamp = f"{start:%Y%m%dT%H%M%S}_{end:%Y%m%dT%H%M%S}"
    return settings.staging_dir / "bars" / source / f"{stamp}.parquet"


def extract_bars(
    settings: Settings, start: datetime, end: datetime, symbols: list[str] | None = None
) -> ExtractResult:
    """Fetch ``[start, end)`` from the configured source, validate, write a staging file."""
    import pyarrow as pa

    symbols = list(symbols or settings.market.symbols)
    source = source_from_settings(settings)
    bars = source.fetch(start, end, symbols)
    bars = validate_bars(bars, f"{source.name} source")
    gaps = find_gaps(
        bars, settings.market.bar, start, end, symbols, settings.market.market_calendar
    )
    for gap in gaps[:MAX_GAPS_LOGGED]:
        log.warning("gap (not filled): %s", gap)
    if len(gaps) > MAX_GAPS_LOGGED:
        log.warning("... and %d more gaps", len(gaps) - MAX_GAPS_LOGGED)
    path = staging_path(settings, source.name, start, end)
    atomic_write_table(path, pa.Table.from_pandas(bars, preserve_index=False))
    result = ExtractResult(
        path=str(path),
        source=source.name,
        start=start.isoformat(),
        end=end.isoformat(),
        rows=len(bars),
        symbols=sorted(bars["symbol"].unique().tolist()),
        gaps=len(gaps),
        missing_bars=sum(g.missing for g in gaps),
    )
    log.info(
        "extracted %d bars for %d symbols from %s, %s .. %s (%d gaps, %d missing bars) -> %s",
        result.rows,
        len(result.symbols),
        result.source,
        result.start,
        result.end,
        result.gaps,
        result.missing_bars,
        result.path,
    )
    return result


def load_bars(settings: Settings, staged: str | Path, source: str) -> dict[str, int]:
    """Upsert a staging file into the warehouse ``bars`` table (idempotent)."""
    bars = pd.read_parquet(staged)
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        result = warehouse.upsert_bars(bars, source=source)
    return {
        "rows": len(bars),
        "inserted": result.inserted,
        "updated": result.updated,
        "unchanged": result.unchanged,
    }
