"""Feature engineering jobs: warehouse bars -> offline store -> online store.

Lookbacks count **bars of the series**, never calendar time: each UTC day is computed
from a fixed bar window, the ``warmup`` bars of each symbol before the day, the day's bars,
and the ``H`` bars after it (labels), whatever the calendar puts between them (weekends,
holidays, closed sessions). An hourly run, a rerun and a backfill of a new feature-set
version all produce the same file for the same bars. A run for ``[start, end)`` recomputes
every day from the one holding the H-th bar before ``start``, because the labels of the
last H bars before ``start`` mature only with the new bars.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import Settings
from signalops.errors import BadInputError
from signalops.features.compute import compute_features
from signalops.features.definitions import LABEL_UP, FeatureSet, get_feature_set
from signalops.features.offline_store import OfflineStore
from signalops.features.online_store import online_store_from_settings
from signalops.warehouse import Warehouse
from signalops.windows import utc_days

log = logging.getLogger(__name__)


class NoFeatureRowsError(BadInputError):
    """The window holds bars but produced no feature rows: the message says why and the fix."""


@dataclass(frozen=True)
class BuildResult:
    feature_set_version: str
    start: str
    end: str
    days: int
    files: int
    rows: int
    labeled_rows: int
    spec_path: str
    staging_dir: str | None = None  # set when the days were written for the validation gate
    expected_rows: int = 0  # bars of those days with enough history: the rows there must be
    bars: int = 0  # bars of those days, with or without enough history

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_day(
    warehouse: Warehouse, symbols: list[str], start: datetime, horizon: int
) -> pd.Timestamp:
    """Start of the UTC day holding the H-th bar before ``start`` (earliest over symbols)."""
    before = warehouse.read_bars_around(symbols, start, start, before=horizon, after=0)
    first = pd.Timestamp(start) if before.empty else min(before["ts"].min(), pd.Timestamp(start))
    return first.tz_convert("UTC").floor("D")


def _day_windows(
    bars: pd.DataFrame, days: list[Any], warmup: int, horizon: int
) -> list[tuple[Any, pd.DataFrame, int, int]]:
    """Per day: its bar window (warmup bars before, H after, per symbol), the day's bars and
    how many of them have ``warmup`` earlier bars."""
    by_symbol = [
        (g.reset_index(drop=True), pd.DatetimeIndex(g["ts"]).asi8)
        for _, g in bars.groupby("symbol", sort=True)
    ]
    out = []
    for day in days:
        day_start = pd.Timestamp(day, tz="UTC")
        lo_ns, hi_ns = day_start.value, (day_start + pd.Timedelta(days=1)).value
        parts, in_day, enough = [], 0, 0
        for group, stamps in by_symbol:
            i0, i1 = np.searchsorted(stamps, [lo_ns, hi_ns])
            if i1 == i0:
                continue
            parts.append(group.iloc[max(0, i0 - warmup) : i1 + horizon])
            in_day += int(i1 - i0)
            # positions in the read frame equal positions in the series up to ``warmup``
            enough += int(max(0, i1 - max(i0, warmup)))
        window = pd.concat(parts, ignore_index=True) if parts else bars.iloc[0:0]
        out.append((day, window, in_day, enough))
    return out


def build_features(
    settings: Settings,
    start: datetime,
    end: datetime,
    version: str | None = None,
    symbols: list[str] | None = None,
    staging: Path | None = None,
) -> BuildResult:
    """Recompute and rewrite the offline-store days touched by ``[start, end)``.

    With ``staging``, the days go to a store rooted there instead (emptied first), for the
    validation gate to check and publish (``signalops.validation.gate_features``). Raises
    :class:`NoFeatureRowsError` when the days hold bars but not one feature row came out.
    """
    feature_set = get_feature_set(version or settings.features.feature_set_version)
    horizon = settings.features.horizon_bars
    symbols = list(symbols or settings.market.symbols)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)  # a rerun starts from a clean slate
    store = OfflineStore(staging if staging is not None else settings.lake_dir)
    spec_path = OfflineStore(settings.lake_dir).write_spec(feature_set, horizon)
    files = rows = labeled = expected = in_days = 0
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        first_day = _first_day(warehouse, symbols, start, horizon)
        days = utc_days(first_day.to_pydatetime(), end)
        last_end = pd.Timestamp(days[-1], tz="UTC") + pd.Timedelta(days=1)
        bars = warehouse.read_bars_around(
            symbols,
            first_day.to_pydatetime(),
            last_end.to_pydatetime(),
            feature_set.warmup,
            horizon,
        )
        for day, window, in_day, enough in _day_windows(bars, days, feature_set.warmup, horizon):
            in_days += in_day
            expected += enough
            if enough == 0:
                continue
            day_start = pd.Timestamp(day, tz="UTC")
            features = compute_features(window, feature_set, horizon)
            features = features[
                (features["ts"] >= day_start) & (features["ts"] < day_start + pd.Timedelta(days=1))
            ]
            if features.empty:
                continue
            written = store.write_day(feature_set.version, day, features)
            files += len(written)
            rows += len(features)
            labeled += int(features[LABEL_UP].notna().sum())
        if rows == 0 and in_days > 0:
            _explain_no_rows(warehouse, feature_set, symbols, first_day, in_days, expected)
    result = BuildResult(
        feature_set.version,
        start.isoformat(),
        end.isoformat(),
        len(days),
        files,
        rows,
        labeled,
        str(spec_path),
        str(staging) if staging is not None else None,
        expected,
        in_days,
    )
    log.info(
        "feature set %s: %d rows (%d labeled) of %d bars in %d files over %d day(s) "
        "for %s .. %s under %s",
        result.feature_set_version,
        rows,
        labeled,
        in_days,
        files,
        len(days),
        result.start,
        result.end,
        store.version_dir(feature_set.version),
    )
    if rows < expected:
        raise NoFeatureRowsError(
            f"feature set {feature_set.version}: {rows} rows for {expected} bars with enough "
            f"history in {result.start} .. {result.end}: rows were lost in the computation"
        )
    return result


def _explain_no_rows(
    warehouse: Warehouse,
    feature_set: FeatureSet,
    symbols: list[str],
    first_day: pd.Timestamp,
    in_days: int,
    expected: int,
) -> None:
    """Zero rows from ``in_days`` bars: say which symbols lack history, and how to fix it."""
    history = warehouse.bars_before(symbols, first_day.to_pydatetime(), feature_set.warmup)
    short = {s: h for s, h in history.items() if h["bars"] < feature_set.warmup}
    detail = "; ".join(
        f"{s} has {h['bars']} bars before {first_day.date()} (first bar {h['first_ts']})"
        for s, h in short.items()
    )
    raise NoFeatureRowsError(
        f"feature set {feature_set.version} produced 0 rows from {in_days} bars "
        f"({expected} with enough history): each row needs {feature_set.warmup} earlier bars "
        f"of its symbol (the set's warm-up, counted in bars). {detail or ''}. Fix: collect "
        "more history before the window (market_data with an earlier start, or "
        "`python -m signalops.cli collect --start ... --end ...`), or build from a later start."
    )


def publish_online(
    settings: Settings, version: str | None = None, symbols: list[str] | None = None
) -> dict[str, Any]:
    """Push the newest offline row of every symbol to the online store."""
    feature_set = get_feature_set(version or settings.features.feature_set_version)
    latest = OfflineStore(settings.lake_dir).latest(feature_set.version, symbols)
    if latest.empty:
        log.warning(
            "offline store has no rows for feature set %s: nothing to publish", feature_set.version
        )
        return {"feature_set_version": feature_set.version, "symbols": 0, "replaced": 0}
    store = online_store_from_settings(settings)
    try:
        replaced = store.write(feature_set.version, latest, feature_set.names)
    finally:
        store.close()
    backend = "redis" if settings.online_store.redis_url else "warehouse table"
    log.info(
        "online store (%s): %d of %d symbols updated to feature set %s, newest bar %s",
        backend,
        replaced,
        len(latest),
        feature_set.version,
        latest["ts"].max().isoformat(),
    )
    return {
        "feature_set_version": feature_set.version,
        "symbols": len(latest),
        "replaced": replaced,
        "newest_ts": latest["ts"].max().isoformat(),
        "backend": backend,
    }


def default_feature_window(settings: Settings) -> tuple[datetime, datetime] | None:
    """No window given: the newest hour of bars in the warehouse."""
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        last = warehouse.last_bar_ts()
    if last is None:
        return None
    end = (last + settings.market.bar).to_pydatetime()
    return end - timedelta(hours=1), end
