"""The validation gate (Great Expectations Core, in-process): every kind of corrupted bars
and features is caught with the failing expectation named; clean data passes; a rerun
after the data is fixed passes without cleanup."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signalops.config import Settings
from signalops.data.bars import validate_bars
from signalops.data.collect import extract_bars, load_bars
from signalops.features.compute import compute_features
from signalops.features.definitions import get_feature_set
from signalops.features.offline_store import OfflineStore
from signalops.features.pipeline import NoFeatureRowsError, build_features
from signalops.validation import (
    GAP_COLUMN,
    STEP_COLUMN,
    ValidationFailed,
    bars_expectations,
    bars_frame,
    check,
    features_expectations,
    run_suite,
)
from signalops.validation.gate import features_staging, gate_bars, gate_features
from tests.conftest import ORIGIN


@pytest.fixture
def clean_bars(bars: pd.DataFrame) -> pd.DataFrame:
    return validate_bars(bars.copy(), "test")  # the canonical schema, sorted by symbol, ts


def _set(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        if frame[column].dtype.kind == "f" and not isinstance(value, float):
            frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return corrupt


BAR_CORRUPTIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str | None]] = {
    "missing column": (
        lambda f: f.drop(columns=["volume"]),
        "expect_table_columns_to_match_set",
        None,
    ),
    "extra column": (
        lambda f: f.assign(vwap=1.0),
        "expect_table_columns_to_match_set",
        None,
    ),
    "text in a price": (
        _set("close", 4, "12,5"),
        "expect_column_values_to_be_in_type_list",
        "close",
    ),
    "null price": (_set("open", 4, np.nan), "expect_column_values_to_not_be_null", "open"),
    "price <= 0": (_set("low", 4, 0.0), "expect_column_values_to_be_between", "low"),
    "high below open": (
        lambda f: f.assign(high=np.where(f.index == 5, f["open"] - 0.5, f["high"])),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "high vs open",
    ),
    "high below close": (
        lambda f: f.assign(high=np.where(f.index == 5, f["close"] - 0.5, f["high"])),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "high vs close",
    ),
    "low above open": (
        lambda f: f.assign(low=np.where(f.index == 5, f["open"] + 0.5, f["low"])),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "open vs low",
    ),
    "low above close": (
        lambda f: f.assign(low=np.where(f.index == 5, f["close"] + 0.5, f["low"])),
        "expect_column_pair_values_a_to_be_greater_than_b",
        "close vs low",
    ),
    "negative volume": (_set("volume", 7, -3.0), "expect_column_values_to_be_between", "volume"),
    "duplicate (symbol, ts)": (
        lambda f: pd.concat([f, f.iloc[[9]]], ignore_index=True),
        "expect_compound_columns_to_be_unique",
        "symbol, ts",
    ),
    "time out of order": (
        lambda f: f.iloc[[*range(0, 10), 11, 10, *range(12, len(f))]].reset_index(drop=True),
        "expect_column_values_to_be_between",
        STEP_COLUMN,
    ),
    "gap beyond the bound": (
        lambda f: f[
            (f["ts"] < f["ts"].min() + timedelta(hours=2))
            | (f["ts"] > f["ts"].min() + timedelta(days=2, hours=2))
        ],
        "expect_column_values_to_be_between",
        GAP_COLUMN,
    ),
}


def test_clean_bars_pass(settings: Settings, clean_bars: pd.DataFrame) -> None:
    report = check(
        run_suite(settings, "bars", bars_expectations(settings), bars_frame(clean_bars), "ok")
    )
    assert report.success and report.evaluated >= 20 and report.failures == []
    assert json.loads(Path(report.json_path).read_text())["success"] is True
    assert Path(report.html_path).is_file() and report.html_path.endswith(".html")


@pytest.mark.parametrize("kind", sorted(BAR_CORRUPTIONS))
def test_each_kind_of_corrupted_bars_is_caught(
    settings: Settings, clean_bars: pd.DataFrame, kind: str
) -> None:
    corrupt, expectation, column = BAR_CORRUPTIONS[kind]
    s = settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"max_gap_bars": 288})}
    )
    report = run_suite(s, "bars", bars_expectations(s), bars_frame(corrupt(clean_bars)), kind)
    with pytest.raises(ValidationFailed) as failed:
        check(report)
    named = [f for f in report.failures if f.expectation == expectation]
    assert named, report.summary()
    if column is not None:
        assert any(f.column == column for f in named), report.summary()
    message = str(failed.value)
    assert (expectation in message and "rows fail" in message) or "observed" in message


def test_gap_to_the_warehouse_previous_bar_counts(settings: Settings, synthetic: object) -> None:
    """A batch that starts long after the symbol's last stored bar fails on the gap."""
    s = settings.model_copy(
        update={"validation": settings.validation.model_copy(update={"max_gap_bars": 24})}
    )
    first = extract_bars(s, ORIGIN, ORIGIN + timedelta(hours=1))
    gate_bars(s, first.as_dict(), "first")
    load_bars(s, first.path, first.source)
    later = extract_bars(s, ORIGIN + timedelta(days=1), ORIGIN + timedelta(days=1, hours=1))
    with pytest.raises(ValidationFailed, match=GAP_COLUMN):
        gate_bars(s, later.as_dict(), "later")
    right_after = extract_bars(s, ORIGIN + timedelta(hours=1), ORIGIN + timedelta(hours=2))
    assert gate_bars(s, right_after.as_dict(), "next")["success"] is True


@pytest.fixture
def features_frame(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_features(validate_bars(bars, "test"), get_feature_set("v1"), 12)


FEATURE_CORRUPTIONS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], str, str | None]] = {
    "out of the declared range": (
        _set("rsi_14", 3, 250.0),
        "expect_column_values_to_be_between",
        "rsi_14",
    ),
    "nulls": (_set("macd", 3, np.nan), "expect_column_values_to_not_be_null", "macd"),
    "wrong dtype": (
        lambda f: f.assign(atr_14=f["atr_14"].astype("float32")),
        "expect_column_values_to_be_in_type_list",
        "atr_14",
    ),
    "missing feature": (
        lambda f: f.drop(columns=["hl_range"]),
        "expect_column_to_exist",
        "hl_range",
    ),
    "rows lost": (lambda f: f.iloc[:-10], "expect_table_row_count_to_equal", None),
    "duplicate rows": (
        lambda f: pd.concat([f.iloc[:-1], f.iloc[[0]]], ignore_index=True),
        "expect_compound_columns_to_be_unique",
        "symbol, ts",
    ),
}


@pytest.mark.parametrize("kind", sorted(FEATURE_CORRUPTIONS))
def test_each_kind_of_corrupted_features_is_caught(
    settings: Settings, features_frame: pd.DataFrame, kind: str
) -> None:
    corrupt, expectation, column = FEATURE_CORRUPTIONS[kind]
    fs = get_feature_set("v1")
    expectations = features_expectations(fs, len(features_frame), settings)
    clean = run_suite(settings, "features.v1", expectations, features_frame, "clean")
    assert clean.success, clean.summary()
    report = run_suite(settings, "features.v1", expectations, corrupt(features_frame), kind)
    assert not report.success
    named = [f for f in report.failures if f.expectation == expectation]
    assert named, report.summary()
    if column is not None:
        assert any(f.column == column for f in named), report.summary()


def test_bad_features_are_not_published_and_a_fixed_rerun_passes(settings: Settings) -> None:
    start, end = ORIGIN, ORIGIN + timedelta(days=3)
    staged = extract_bars(settings, start, end)
    load_bars(settings, staged.path, staged.source)
    staging = features_staging(settings, "v1", start.isoformat(), end.isoformat())
    built = build_features(settings, start, end, "v1", staging=staging)
    assert built.rows == built.expected_rows > 0
    # Corrupt one staged day file (a bad feature value), as a bug upstream would.
    store = OfflineStore(staging)
    path = sorted(staging.rglob("*.parquet"))[1]
    frame = pd.read_parquet(path)
    frame.loc[2, "bb_position_20"] = 1e6
    frame.to_parquet(path, index=False)
    with pytest.raises(ValidationFailed, match="bb_position_20"):
        gate_features(settings, built.as_dict(), "bad")
    published = OfflineStore(settings.lake_dir).version_dir("v1")
    assert not list(published.rglob("*.parquet"))  # nothing published
    assert store.read("v1").shape[0] == built.rows  # the staged days stay for inspection
    # The data is fixed (here: recomputed); the rerun needs no cleanup.
    again = build_features(settings, start, end, "v1", staging=staging)
    report = gate_features(settings, again.as_dict(), "fixed")
    assert report["success"] and report["published_files"] > 0
    assert len(OfflineStore(settings.lake_dir).read("v1")) == again.rows
    assert not staging.exists()


def test_a_window_without_enough_history_is_an_error_and_empty_is_never_published(
    settings: Settings,
) -> None:
    start, end = ORIGIN, ORIGIN + timedelta(hours=2)  # fewer bars than the warm-up
    staged = extract_bars(settings, start, end)
    load_bars(settings, staged.path, staged.source)
    staging = features_staging(settings, "v1", start.isoformat(), end.isoformat())
    with pytest.raises(NoFeatureRowsError, match="400 earlier bars"):
        build_features(settings, start, end, "v1", staging=staging)
    # Handed an empty build although the bars had history, the suite refuses it.
    empty = {
        "feature_set_version": "v1",
        "rows": 0,
        "expected_rows": 24,
        "staging_dir": str(staging),
    }
    with pytest.raises(ValidationFailed, match="expect_table_row_count_to_equal"):
        gate_features(settings, empty, "empty")
    assert not OfflineStore(settings.lake_dir).files("v1")
