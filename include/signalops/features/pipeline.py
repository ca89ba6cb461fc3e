"""Feature engineering jobs: warehouse bars -> offline store -> online store.

Each UTC day is computed from a fixed bar window, ``[day - warmup bars, day + 1 day + H
bars)``, whatever run asks for it: an hourly run, a rerun and a backfill of a new
feature-set version all produce the same file for the same bars. A run for ``[start,
end)`` recomputes every day touched by ``[start - H bars, end)``, because the labels of the
last H bars before ``start`` mature only with the new bars.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from signalops.config import Settings
from signalops.features.compute import compute_features
from signalops.features.definitions import LABEL_UP, get_feature_set
from signalops.features.offline_store import OfflineStore
from signalops.features.online_store import online_store_from_settings
from signalops.warehouse import Warehouse
from signalops.windows import utc_days

log = logging.getLogger(__name__)


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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    validation gate to check and publish (``signalops.validation.gate_features``).
    """
    feature_set = get_feature_set(version or settings.features.feature_set_version)
    horizon = settings.features.horizon_bars
    bar = settings.market.bar
    symbols = list(symbols or settings.market.symbols)
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)  # a rerun starts from a clean slate
    store = OfflineStore(staging if staging is not None else settings.lake_dir)
    spec_path = OfflineStore(settings.lake_dir).write_spec(feature_set, horizon)
    days = utc_days(start - horizon * bar, end)
    files = rows = labeled = expected = 0
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        for day in days:
            day_start = pd.Timestamp(day, tz="UTC")
            day_end = day_start + pd.Timedelta(days=1)
            bars = warehouse.read_bars(
                symbols, day_start - feature_set.warmup * bar, day_end + horizon * bar
            )
            features = compute_features(bars, feature_set, horizon)
            features = features[(features["ts"] >= day_start) & (features["ts"] < day_end)]
            position = bars.groupby("symbol").cumcount()  # earlier bars each bar has
            in_day = (bars["ts"] >= day_start) & (bars["ts"] < day_end)
            expected += int((in_day & (position >= feature_set.warmup)).sum())
            if features.empty:
                continue
            written = store.write_day(feature_set.version, day, features)
            files += len(written)
            rows += len(features)
            labeled += int(features[LABEL_UP].notna().sum())
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
    )
    log.info(
        "feature set %s: %d rows (%d labeled) in %d files over %d day(s) for %s .. %s under %s",
        result.feature_set_version,
        rows,
        labeled,
        files,
        len(days),
        result.start,
        result.end,
        store.version_dir(feature_set.version),
    )
    if rows == 0:
        log.warning(
            "no feature rows: each row needs %d earlier bars of history per symbol",
            feature_set.warmup,
        )
    return result


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
