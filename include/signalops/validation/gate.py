"""The gate as the pipelines use it: check a staged batch, then let it through (or not).

``gate_bars`` runs between collection and the warehouse load; ``gate_features`` between
feature computation (into a staging store) and the offline store, which it publishes to
only when the suite passes. Both raise :class:`signalops.validation.ValidationFailed`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from signalops.config import Settings
from signalops.features.definitions import get_feature_set
from signalops.features.offline_store import OfflineStore
from signalops.validation import (
    bars_expectations,
    bars_frame,
    check,
    features_expectations,
    run_suite,
)
from signalops.warehouse import Warehouse
from signalops.windows import parse_ts


def gate_bars(settings: Settings, staged: dict[str, Any], key: str) -> dict[str, Any]:
    """Validate an extracted batch (``ExtractResult.as_dict()``) before it is loaded."""
    bars = pd.read_parquet(staged["path"])
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        previous = warehouse.previous_bar_ts(
            sorted(bars["symbol"].unique().tolist()), parse_ts(staged["start"], "start")
        )
    frame = bars_frame(bars, previous, settings.market.market_calendar)
    return check(run_suite(settings, "bars", bars_expectations(settings), frame, key)).as_dict()


def features_staging(settings: Settings, version: str, start: str, end: str) -> Path:
    """Where a window's features wait for the gate (one place per window: reruns reuse it)."""
    stamp = f"{pd.Timestamp(start):%Y%m%dT%H%M%S}_{pd.Timestamp(end):%Y%m%dT%H%M%S}"
    return settings.staging_dir / "features" / version / stamp


def gate_features(settings: Settings, built: dict[str, Any], key: str) -> dict[str, Any]:
    """Validate staged features (``BuildResult.as_dict()``); publish them when they pass."""
    staging = Path(built["staging_dir"])
    feature_set = get_feature_set(built["feature_set_version"])
    if int(built["rows"]) == 0 and int(built["expected_rows"]) == 0:
        # Not enough history for a single row (the build said so): nothing to check.
        shutil.rmtree(staging, ignore_errors=True)
        return {"success": True, "rows": 0, "json_path": "", "published_files": 0}
    frame = OfflineStore(staging).read(feature_set.version)
    report = run_suite(
        settings,
        f"features.{feature_set.version}",
        features_expectations(feature_set, int(built["expected_rows"]), settings),
        frame,
        key,
    )
    check(report)
    published = publish_staged(staging, settings.lake_dir)
    return {**report.as_dict(), "published_files": published}


def publish_staged(staging: Path, lake: Path) -> int:
    """Move every staged day file into the lake (each move atomic), then drop the staging."""
    moved = 0
    for path in sorted(staging.rglob("*.parquet")):
        target = lake / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved += 1
    shutil.rmtree(staging, ignore_errors=True)
    return moved
