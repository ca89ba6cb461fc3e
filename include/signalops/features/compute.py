"""Vectorized, point-in-time feature and label computation.

Within each symbol, every feature at bar ``t`` is a causal function of bars ``<= t``
(rolling windows and left-to-right exponential smoothing only). The label looks ahead:
``label_return`` is ``log(close[t+H] / close[t])`` and ``label_up`` is 1.0 when it is
positive, 0.0 otherwise, NaN while bar ``t+H`` does not exist yet. Labels are never
features. Rows with fewer than ``feature_set.warmup`` earlier bars are dropped, so every
emitted feature is fully defined.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import pandas as pd

from signalops.features.definitions import LABEL_RETURN, LABEL_UP, FeatureSet


class _Symbol:
    """One symbol's bars with cached intermediate series (each computed once)."""

    def __init__(self, bars: pd.DataFrame):
        self.ts = bars["ts"]
        self.open = bars["open"].to_numpy()
        self.high = bars["high"].to_numpy()
        self.low = bars["low"].to_numpy()
        self.close_s = pd.Series(bars["close"].to_numpy())
        self.close = self.close_s.to_numpy()
        self.volume_s = pd.Series(bars["volume"].to_numpy())

    @cached_property
    def log_close(self) -> pd.Series:
        return pd.Series(np.log(self.close))

    @cached_property
    def ret1(self) -> pd.Series:
        return self.log_close.diff()

    def ema(self, span: int) -> pd.Series:
        return self.close_s.ewm(span=span, adjust=False).mean()

    @cached_property
    def macd_line(self) -> pd.Series:
        return (self.ema(12) - self.ema(26)) / self.close_s

    @cached_property
    def macd_signal(self) -> pd.Series:
        return self.macd_line.ewm(span=9, adjust=False).mean()

    def rv(self, window: int) -> pd.Series:
        return self.ret1.rolling(window).std(ddof=0)

    def volume_z(self, window: int) -> np.ndarray:
        rolling = self.volume_s.rolling(window)
        return _ratio(self.volume_s - rolling.mean(), rolling.std(ddof=0), fill=0.0)

    @cached_property
    def range_s(self) -> pd.Series:
        return pd.Series((self.high - self.low) / self.close)

    @cached_property
    def hour_angle(self) -> np.ndarray:
        hours = self.ts.dt.hour.to_numpy() + self.ts.dt.minute.to_numpy() / 60.0
        return 2.0 * np.pi * hours / 24.0


def _ratio(num: pd.Series | np.ndarray, den: pd.Series | np.ndarray, fill: float) -> np.ndarray:
    """num / den, with ``fill`` where den is 0 (flat markets), NaN where either is NaN."""
    n, d = np.asarray(num, dtype="float64"), np.asarray(den, dtype="float64")
    out = np.full_like(n, np.nan)
    ok = np.isfinite(n) & np.isfinite(d)
    zero = ok & (d == 0)
    nz = ok & ~zero
    out[nz] = n[nz] / d[nz]
    out[zero] = fill
    return out


def _rsi(s: _Symbol, period: int) -> np.ndarray:
    delta = s.close_s.diff()
    gain = delta.clip(lower=0).ewm(alpha=1 / period, adjust=False).mean()
    loss = (-delta.clip(upper=0)).ewm(alpha=1 / period, adjust=False).mean()
    rs_den = gain + loss
    return 100.0 * _ratio(gain, rs_den, fill=0.5)


def _bb_position(s: _Symbol, window: int) -> np.ndarray:
    roll = s.close_s.rolling(window)
    mean, std = roll.mean(), roll.std(ddof=0)
    return _ratio(s.close_s - (mean - 2 * std), 4 * std, fill=0.5)


def _atr(s: _Symbol, period: int) -> np.ndarray:
    prev_close = s.close_s.shift(1).to_numpy()
    true_range = np.fmax(
        s.high - s.low, np.fmax(np.abs(s.high - prev_close), np.abs(s.low - prev_close))
    )
    atr = pd.Series(true_range).ewm(alpha=1 / period, adjust=False).mean()
    return (atr / s.close_s).to_numpy()


def _stoch(s: _Symbol, window: int) -> np.ndarray:
    low = pd.Series(s.low).rolling(window).min()
    high = pd.Series(s.high).rolling(window).max()
    return _ratio(s.close_s - low, high - low, fill=0.5)


def _log_return(bars: int) -> Callable[[_Symbol], pd.Series]:
    return lambda s: s.log_close.diff(bars)


FEATURE_FUNCTIONS: dict[str, Callable[[_Symbol], np.ndarray | pd.Series]] = {
    **{f"ret_{k}": _log_return(k) for k in (1, 3, 5, 6, 12, 20, 24, 48, 60, 96)},
    "rsi_14": lambda s: _rsi(s, 14),
    "macd": lambda s: s.macd_line,
    "macd_signal": lambda s: s.macd_signal,
    "macd_hist": lambda s: s.macd_line - s.macd_signal,
    "bb_position_20": lambda s: _bb_position(s, 20),
    "bb_width_20": lambda s: _ratio(
        4 * s.close_s.rolling(20).std(ddof=0), s.close_s.rolling(20).mean(), 0.0
    ),
    "rv_12": lambda s: s.rv(12),
    "rv_48": lambda s: s.rv(48),
    "rv_96": lambda s: s.rv(96),
    "rv_ratio_12_48": lambda s: _ratio(s.rv(12), s.rv(48), fill=1.0),
    "atr_14": lambda s: _atr(s, 14),
    "hl_range": lambda s: (s.high - s.low) / s.close,
    "close_position": lambda s: _ratio(s.close - s.low, s.high - s.low, fill=0.5),
    "stoch_k_14": lambda s: _stoch(s, 14),
    "momentum_24": lambda s: s.close / s.close_s.rolling(24).mean().to_numpy() - 1.0,
    "ema_ratio_12_48": lambda s: s.ema(12) / s.ema(48) - 1.0,
    "volume_trend_12_48": lambda s: np.log(
        _ratio(s.volume_s.rolling(12).mean(), s.volume_s.rolling(48).mean(), fill=1.0).clip(1e-12)
    ),
    "volume_z_24": lambda s: s.volume_z(24),
    "volume_z_96": lambda s: s.volume_z(96),
    "ret_z_20": lambda s: _ratio(s.log_close.diff(20), s.rv(60) * np.sqrt(20), fill=0.0),
    "macd_z": lambda s: _ratio(s.macd_line, s.rv(60), fill=0.0),
    "rv_ratio_5_60": lambda s: _ratio(s.rv(5), s.rv(60), fill=1.0),
    "rv_ratio_20_250": lambda s: _ratio(s.rv(20), s.rv(250), fill=1.0),
    "range_ratio_5_60": lambda s: _ratio(
        s.range_s.rolling(5).mean(), s.range_s.rolling(60).mean(), fill=1.0
    ),
    "volume_z_20": lambda s: s.volume_z(20),
    "volume_trend_5_20": lambda s: np.log(
        _ratio(s.volume_s.rolling(5).mean(), s.volume_s.rolling(20).mean(), fill=1.0).clip(1e-12)
    ),
    "hour_sin": lambda s: np.sin(s.hour_angle),
    "hour_cos": lambda s: np.cos(s.hour_angle),
}


def compute_features(
    bars: pd.DataFrame, feature_set: FeatureSet, horizon_bars: int
) -> pd.DataFrame:
    """Features and labels for every bar with enough history.

    ``bars`` is in the canonical bar schema (any order). Returns ``symbol, ts``, the
    feature columns in the set's order (float64), then ``label_return`` and ``label_up``.
    """
    missing = [n for n in feature_set.names if n not in FEATURE_FUNCTIONS]
    if missing:
        raise KeyError(
            f"feature set {feature_set.version} declares features with no function: {missing}"
        )
    ordered = bars.sort_values(["symbol", "ts"], kind="stable")
    warmup = feature_set.warmup
    columns = [*feature_set.names, LABEL_RETURN, LABEL_UP]
    groups = [(sym, g) for sym, g in ordered.groupby("symbol", sort=True) if len(g) > warmup]
    if not groups:
        return empty_features(feature_set)
    # One float block for every symbol, filled in place: no per-symbol frames to concatenate.
    sizes = [len(g) - warmup for _, g in groups]
    values = np.empty((sum(sizes), len(columns)), dtype="float64")
    stamps = np.empty(sum(sizes), dtype="datetime64[ns]")
    row = 0
    for (_, group), size in zip(groups, sizes, strict=True):
        s = _Symbol(group)
        block = values[row : row + size]
        for j, name in enumerate(feature_set.names):
            block[:, j] = np.asarray(FEATURE_FUNCTIONS[name](s), dtype="float64")[warmup:]
        future = np.full(len(group), np.nan)
        future[:-horizon_bars] = s.close[horizon_bars:]
        label_return = np.log(future / s.close)[warmup:]
        block[:, -2] = label_return
        block[:, -1] = np.where(np.isnan(label_return), np.nan, label_return > 0)
        stamps[row : row + size] = (
            group["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()[warmup:]
        )
        row += size
    result = pd.DataFrame(values, columns=columns)
    result.insert(0, "ts", pd.DatetimeIndex(stamps).tz_localize("UTC"))
    result.insert(0, "symbol", np.repeat(np.array([sym for sym, _ in groups], dtype=object), sizes))
    return result


def empty_features(feature_set: FeatureSet) -> pd.DataFrame:
    columns = {"symbol": pd.Series(dtype="object"), "ts": pd.Series(dtype="datetime64[ns, UTC]")}
    for name in (*feature_set.names, LABEL_RETURN, LABEL_UP):
        columns[name] = pd.Series(dtype="float64")
    return pd.DataFrame(columns)
