"""Feature definitions and the point-in-time guarantee."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from signalops.data.synthetic import SyntheticSource
from signalops.features.compute import FEATURE_FUNCTIONS, compute_features
from signalops.features.definitions import (
    FEATURE_SETS,
    LABEL_PREFIX,
    LABEL_RETURN,
    LABEL_UP,
    UnknownFeatureSetError,
    get_feature_set,
)

H = 12
V1 = get_feature_set("v1")


def test_feature_sets_are_declared_once_and_complete() -> None:
    for fs in FEATURE_SETS.values():
        assert len(fs.features) >= 15
        assert len(set(fs.names)) == len(fs.names)
        for f in fs.features:
            assert f.description and f.lower < f.upper and f.lookback >= 1 and f.dtype == "float64"
            assert f.name in FEATURE_FUNCTIONS
            assert not f.name.startswith(LABEL_PREFIX), "a label is never a feature"
    assert set(get_feature_set("v1").names) < set(get_feature_set("v2").names)
    with pytest.raises(UnknownFeatureSetError, match="known"):
        get_feature_set("v9")


def test_feature_sets_say_which_bar_sizes_they_fit() -> None:
    daily = [fs for fs in FEATURE_SETS.values() if fs.applies_to(1440)]
    assert [fs.version for fs in daily] == ["d1"]
    for fs in daily:  # time of day is constant on daily bars: never in a daily set
        assert not any(f.intraday for f in fs.features)
    assert {f.name for f in V1.features if f.intraday} == {"hour_sin", "hour_cos"}
    assert V1.applies_to(5) and V1.applies_to(60) and not V1.applies_to(1440)
    with pytest.raises(ValueError, match="intraday features"):
        dataclasses.replace(V1, version="x", bar_minutes=(1, 1440))


def test_output_shape_and_no_nan(bars: pd.DataFrame) -> None:
    out = compute_features(bars, V1, H)
    assert list(out.columns) == ["symbol", "ts", *V1.names, LABEL_RETURN, LABEL_UP]
    per_symbol = bars.groupby("symbol").size() - V1.warmup
    assert out.groupby("symbol").size().to_dict() == per_symbol.to_dict()
    assert not out[V1.names].isna().any().any()
    # exactly the last H bars per symbol have no label yet
    assert out.groupby("symbol")[LABEL_UP].apply(lambda s: s.isna().sum()).tolist() == [H, H]


def test_values_within_declared_ranges(synthetic: SyntheticSource) -> None:
    start = synthetic.origin
    shifted = dataclasses.replace(synthetic, shift_at=start + timedelta(days=5))
    out = compute_features(
        shifted.fetch(start, start + timedelta(days=10)), get_feature_set("v2"), H
    )
    for f in get_feature_set("v2").features:
        col = out[f.name]
        assert col.between(f.lower, f.upper).all(), (f.name, col.min(), col.max())


@pytest.mark.parametrize("cut", [700, 701, 900])
def test_point_in_time_features_ignore_future_bars(bars: pd.DataFrame, cut: int) -> None:
    """Scrambling every bar after t must not change any feature at or before t."""
    rng = np.random.default_rng(cut)
    future = bars.copy()
    later = future.groupby("symbol").cumcount() > cut
    noise = np.exp(rng.normal(0, 0.05, later.sum()))
    for c in ("open", "high", "low", "close"):
        future.loc[later, c] = future.loc[later, c] * noise
    future.loc[later, "volume"] *= 7.0
    t_cut = bars.loc[bars.groupby("symbol").cumcount() == cut, "ts"].iloc[0]
    a = compute_features(bars, V1, H)
    b = compute_features(future, V1, H)
    past_a, past_b = a[a.ts <= t_cut], b[b.ts <= t_cut]
    pd.testing.assert_frame_equal(past_a[V1.names], past_b[V1.names])  # exact, not approximate
    assert not np.allclose(a[a.ts > t_cut][V1.names], b[b.ts > t_cut][V1.names])
    # Labels up to t - H use bars <= t only; the labels after that look past t and change.
    horizon_end = t_cut - H * pd.Timedelta(minutes=5)
    pd.testing.assert_series_equal(
        a.loc[a.ts <= horizon_end, LABEL_RETURN], b.loc[b.ts <= horizon_end, LABEL_RETURN]
    )
    assert not np.allclose(
        a.loc[a.ts > horizon_end, LABEL_RETURN].dropna(),
        b.loc[b.ts > horizon_end, LABEL_RETURN].dropna(),
    )


def test_label_is_direction_over_next_h_bars(bars: pd.DataFrame) -> None:
    out = compute_features(bars, V1, H)
    one = bars[bars.symbol == "AAA"].set_index("ts")["close"]
    row = out[out.symbol == "AAA"].iloc[50]
    t = row["ts"]
    expected = np.log(one.shift(-H)[t] / one[t])
    assert row[LABEL_RETURN] == pytest.approx(expected, rel=1e-12)
    assert row[LABEL_UP] == float(expected > 0)
    # the label is a pure function of close[t] and close[t+H]: bars t+1..t+H-1 do not matter
    moved = bars.copy()
    pos = moved.index[
        (moved.symbol == "AAA") & (moved.ts > t) & (moved.ts < t + H * pd.Timedelta(minutes=5))
    ]
    moved.loc[pos, "close"] *= 1.5
    moved.loc[pos, "high"] *= 1.5
    again = compute_features(moved, V1, H)
    assert (
        again.loc[(again.symbol == "AAA") & (again.ts == t), LABEL_RETURN].item()
        == row[LABEL_RETURN]
    )


def test_symbols_are_computed_independently(bars: pd.DataFrame) -> None:
    together = compute_features(bars, V1, H)
    alone = compute_features(bars[bars.symbol == "BBB"], V1, H)
    pd.testing.assert_frame_equal(
        together[together.symbol == "BBB"].reset_index(drop=True), alone.reset_index(drop=True)
    )


def test_too_little_history_gives_no_rows(bars: pd.DataFrame) -> None:
    short = bars.groupby("symbol").head(V1.warmup)
    assert compute_features(short, V1, H).empty


def test_flat_market_is_defined() -> None:
    ts = pd.date_range("2026-01-01", periods=V1.warmup + 50, freq="5min", tz="UTC")
    flat = pd.DataFrame(
        {
            "symbol": "F",
            "ts": ts,
            "open": 5.0,
            "high": 5.0,
            "low": 5.0,
            "close": 5.0,
            "volume": 10.0,
        }
    )
    out = compute_features(flat, V1, H)
    assert not out[V1.names].isna().any().any()
    assert (out["rsi_14"] == 50.0).all() and (out["close_position"] == 0.5).all()
