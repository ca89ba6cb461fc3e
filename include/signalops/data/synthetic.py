"""A deterministic synthetic market: seeded, regime-switching, with an optional shift.

Every bar is a pure function of (seed, symbol, bar index since ``origin``): random numbers
come in fixed chunks seeded by those keys, so fetching ``[a, c)`` gives the same bars as
fetching ``[a, b)`` then ``[b, c)``. Log returns follow an AR(1) process whose drift,
volatility and persistence change per regime, with an intraday volatility cycle; volume
rises with absolute returns. A slowly mean-reverting latent trend (a fraction
``trend_strength`` of the bar volatility, half-life around ``trend_bars``) adds the kind of
persistent, partly predictable drift that momentum features pick up, so that models have
something real but modest to learn. From ``shift_at`` on, volatility, drift and volume change:
a distribution shift to exercise drift monitoring.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from signalops.data.bars import empty_bars

CHUNK = 4096  # bars per random chunk; part of the generator's definition, never change it


@dataclass(frozen=True)
class SyntheticSource:
    symbols: tuple[str, ...]
    bar: timedelta
    seed: int
    origin: datetime
    regime_bars: int = 864
    shift_at: datetime | None = None
    shift_volatility_factor: float = 2.5
    shift_drift: float = -2e-4
    shift_volume_factor: float = 3.0
    trend_strength: float = 0.15
    trend_bars: int = 144

    name = "synthetic"

    def fetch(
        self, start: datetime, end: datetime, symbols: list[str] | None = None
    ) -> pd.DataFrame:
        """Bars with ``start <= ts < end`` for the given symbols (default: all)."""
        wanted = list(symbols or self.symbols)
        step = pd.Timedelta(self.bar)
        origin = pd.Timestamp(self.origin)
        first = max(0, int(np.ceil((pd.Timestamp(start) - origin) / step)))
        stop = int(np.ceil((pd.Timestamp(end) - origin) / step))
        if stop <= first:
            return empty_bars()
        frames = [self._symbol_bars(symbol, first, stop) for symbol in wanted]
        return pd.concat(frames, ignore_index=True)

    def _symbol_bars(self, symbol: str, first: int, stop: int) -> pd.DataFrame:
        key = zlib.crc32(symbol.encode())
        n = stop  # the path depends on every bar since origin
        eps, wick, vol_noise, trend_noise = self._noise(key, n)

        index = np.arange(n)
        regime = index // self.regime_bars
        n_regimes = int(regime[-1]) + 1
        # One generator per regime, so a regime's parameters never depend on the window.
        params = np.array(
            [
                np.random.default_rng([self.seed, key, 1_000_003, r]).random(3)
                for r in range(n_regimes)
            ]
        )
        drift = (params[:, 0] - 0.5) * 1.6e-4
        sigma = 1.2e-3 * np.exp((params[:, 1] - 0.5) * 1.2)
        phi = -0.05 + 0.35 * params[:, 2]

        ts = pd.Timestamp(self.origin) + pd.to_timedelta(index * self.bar.total_seconds(), unit="s")
        hour = ts.hour.to_numpy() + ts.minute.to_numpy() / 60.0
        intraday = 1.0 + 0.4 * np.cos(2 * np.pi * (hour - 14.0) / 24.0)
        bar_sigma = sigma[regime] * intraday
        rho = np.exp(-1.0 / self.trend_bars)
        trend = lfilter([np.sqrt(1 - rho**2) * self.trend_strength], [1.0, -rho], trend_noise)
        shock = drift[regime] + bar_sigma * (trend + eps)
        if self.shift_at is not None:
            shifted = ts >= pd.Timestamp(self.shift_at)
            bar_sigma = np.where(shifted, bar_sigma * self.shift_volatility_factor, bar_sigma)
            shock = np.where(
                shifted,
                drift[regime] + self.shift_drift + bar_sigma * (trend + eps),
                shock,
            )

        log_ret = np.empty(n)
        carry = np.zeros(1)
        for r in range(n_regimes):
            lo, hi = r * self.regime_bars, min(n, (r + 1) * self.regime_bars)
            log_ret[lo:hi], carry = lfilter([1.0], [1.0, -phi[r]], shock[lo:hi], zi=carry * phi[r])
            carry = np.array([log_ret[hi - 1]])

        p0 = 20.0 + (key % 480)
        close = p0 * np.exp(np.cumsum(log_ret))
        open_ = np.concatenate(([p0], close[:-1]))
        high = np.maximum(open_, close) * np.exp(np.abs(wick[:, 0]) * bar_sigma * 0.6)
        low = np.minimum(open_, close) * np.exp(-np.abs(wick[:, 1]) * bar_sigma * 0.6)
        volume = (
            (1_000.0 + (key % 97) * 50.0)
            * np.exp(0.35 * vol_noise)
            * (1.0 + 120.0 * np.abs(log_ret))
        )
        if self.shift_at is not None:
            volume = np.where(shifted, volume * self.shift_volume_factor, volume)

        part = slice(first, stop)
        return pd.DataFrame(
            {
                "symbol": symbol,
                "ts": ts[part],
                "open": open_[part],
                "high": high[part],
                "low": low[part],
                "close": close[part],
                "volume": np.round(volume[part], 3),
            }
        )

    def _noise(self, key: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        chunks = []
        for c in range((n + CHUNK - 1) // CHUNK):
            rng = np.random.default_rng([self.seed, key, c])
            chunks.append(rng.standard_normal((CHUNK, 5)))
        noise = np.concatenate(chunks)[:n]
        return noise[:, 0], noise[:, 1:3], noise[:, 3], noise[:, 4]
