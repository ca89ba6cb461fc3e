from __future__ import annotations

import dataclasses
from datetime import timedelta

import numpy as np
import pandas as pd

from signalops.data.bars import validate_bars
from signalops.data.synthetic import SyntheticSource
from tests.conftest import ORIGIN


def test_deterministic_and_seeded(synthetic: SyntheticSource) -> None:
    end = ORIGIN + timedelta(days=2)
    a, b = synthetic.fetch(ORIGIN, end), synthetic.fetch(ORIGIN, end)
    pd.testing.assert_frame_equal(a, b)
    other = dataclasses.replace(synthetic, seed=12).fetch(ORIGIN, end)
    assert not np.allclose(a["close"], other["close"])
    assert set(a["symbol"]) == {"AAA", "BBB"}
    assert not np.allclose(a.loc[a.symbol == "AAA", "close"], a.loc[a.symbol == "BBB", "close"])


def test_windows_compose(synthetic: SyntheticSource) -> None:
    """Fetching [a, c) equals fetching [a, b) then [b, c): hourly runs rebuild the same history."""
    a, b, c = (
        ORIGIN + timedelta(hours=30),
        ORIGIN + timedelta(hours=31, minutes=7),
        ORIGIN + timedelta(days=3),
    )
    whole = synthetic.fetch(a, c)
    parts = pd.concat([synthetic.fetch(a, b), synthetic.fetch(b, c)])
    parts = parts.sort_values(["symbol", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(whole.sort_values(["symbol", "ts"]).reset_index(drop=True), parts)


def test_bars_are_valid_and_on_the_grid(bars: pd.DataFrame) -> None:
    validate_bars(bars, "synthetic")
    steps = bars.groupby("symbol")["ts"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(minutes=5)]


def test_regimes_change_volatility(synthetic: SyntheticSource) -> None:
    bars = synthetic.fetch(ORIGIN, ORIGIN + timedelta(days=30))
    one = bars[bars.symbol == "AAA"].reset_index(drop=True)
    ret = np.log(one["close"]).diff()
    per_regime = ret.groupby(one.index // synthetic.regime_bars).std()
    assert per_regime.max() / per_regime.min() > 1.3


def test_shift_injection(synthetic: SyntheticSource) -> None:
    shift_at = ORIGIN + timedelta(days=3)
    shifted = dataclasses.replace(synthetic, shift_at=shift_at)
    end = ORIGIN + timedelta(days=6)
    base, moved = synthetic.fetch(ORIGIN, end), shifted.fetch(ORIGIN, end)
    before = base["ts"] < pd.Timestamp(shift_at)
    pd.testing.assert_frame_equal(base[before], moved[before])  # the past is untouched

    def vol(frame: pd.DataFrame) -> float:
        return float(frame.groupby("symbol")["close"].transform(lambda c: np.log(c).diff()).std())

    assert vol(moved[~before]) > 2.0 * vol(base[~before])
    assert moved.loc[~before, "volume"].mean() > 2.0 * base.loc[~before, "volume"].mean()


def test_nothing_before_origin(synthetic: SyntheticSource) -> None:
    assert synthetic.fetch(ORIGIN - timedelta(days=2), ORIGIN).empty
    assert synthetic.fetch(ORIGIN - timedelta(hours=1), ORIGIN + timedelta(minutes=10))[
        "ts"
    ].min() == pd.Timestamp(ORIGIN)
