"""Feature sets, declared once: name, dtype, valid range, description, lookback, version.

The declared range is what the validation suites check and what the drift monitor bins
over; ``lookback`` is how many past bars a value needs. Indicators built on exponential
smoothing (RSI, MACD, ATR, EMA ratios) carry ``EMA_WARMUP`` bars of lookback: after that
many bars the weight left on anything older is below 1e-12, so a value computed from a
window of that length equals the one computed from all history.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from signalops.errors import BadInputError

EMA_WARMUP = 400
LABEL_PREFIX = "label_"
LABEL_UP = "label_up"
LABEL_RETURN = "label_return"


class UnknownFeatureSetError(BadInputError):
    """A feature-set version that is not declared here."""


@dataclass(frozen=True)
class FeatureDef:
    name: str
    description: str
    lower: float
    upper: float
    lookback: int
    dtype: str = "float64"


@dataclass(frozen=True)
class FeatureSet:
    version: str
    features: tuple[FeatureDef, ...]
    description: str = ""

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def warmup(self) -> int:
        """Past bars a row needs before every feature in the set is defined."""
        return max(f.lookback for f in self.features)

    def spec(self, horizon_bars: int) -> dict[str, Any]:
        """The ordered feature spec that travels with datasets and models."""
        return {
            "feature_set_version": self.version,
            "names": self.names,
            "dtypes": {f.name: f.dtype for f in self.features},
            "ranges": {f.name: [f.lower, f.upper] for f in self.features},
            "label": {"name": LABEL_UP, "return": LABEL_RETURN, "horizon_bars": horizon_bars},
            "warmup_bars": self.warmup,
        }


def _f(name: str, description: str, lower: float, upper: float, lookback: int) -> FeatureDef:
    return FeatureDef(name, description, lower, upper, lookback)


_RETURNS = tuple(
    _f(f"ret_{k}", f"log return of close over the last {k} bar(s)", -3.0, 3.0, k)
    for k in (1, 3, 6, 12, 24, 48)
)

_CORE = (
    *_RETURNS,
    _f("rsi_14", "Wilder RSI over 14 bars", 0.0, 100.0, EMA_WARMUP),
    _f("macd", "MACD line (EMA12 - EMA26) divided by close", -1.0, 1.0, EMA_WARMUP),
    _f("macd_signal", "EMA9 of the MACD line", -1.0, 1.0, EMA_WARMUP),
    _f("macd_hist", "MACD line minus its signal", -1.0, 1.0, EMA_WARMUP),
    _f(
        "bb_position_20",
        "position of close in the 20-bar 2-sigma Bollinger band (0 = lower)",
        -20.0,
        20.0,
        20,
    ),
    _f("bb_width_20", "Bollinger band width (4 sigma) over the 20-bar mean", 0.0, 5.0, 20),
    _f("rv_12", "realized volatility: std of 1-bar log returns over 12 bars", 0.0, 1.0, 13),
    _f("rv_48", "realized volatility: std of 1-bar log returns over 48 bars", 0.0, 1.0, 49),
    _f("rv_ratio_12_48", "rv_12 / rv_48: volatility regime change", 0.0, 50.0, 49),
    _f("atr_14", "Wilder average true range over 14 bars, divided by close", 0.0, 1.0, EMA_WARMUP),
    _f("hl_range", "(high - low) / close of the bar", 0.0, 1.0, 1),
    _f("close_position", "(close - low) / (high - low) of the bar (0.5 when flat)", 0.0, 1.0, 1),
    _f("stoch_k_14", "stochastic %K: close within the 14-bar high-low range", 0.0, 1.0, 14),
    _f("momentum_24", "close / 24-bar simple moving average - 1", -1.0, 1.0, 24),
    _f("ema_ratio_12_48", "EMA12 / EMA48 - 1", -1.0, 1.0, EMA_WARMUP),
    _f("volume_trend_12_48", "log of 12-bar over 48-bar mean volume", -10.0, 10.0, 48),
    _f("volume_z_24", "z-score of volume against the last 24 bars", -50.0, 50.0, 24),
    _f("hour_sin", "sine of the bar's UTC hour of day", -1.0, 1.0, 1),
    _f("hour_cos", "cosine of the bar's UTC hour of day", -1.0, 1.0, 1),
)

FEATURE_SETS: dict[str, FeatureSet] = {
    "v1": FeatureSet("v1", _CORE, "returns, oscillators, volatility, volume and calendar"),
    "v2": FeatureSet(
        "v2",
        (
            *_CORE,
            _f("ret_96", "log return of close over the last 96 bars", -3.0, 3.0, 96),
            _f("rv_96", "realized volatility over 96 bars", 0.0, 1.0, 97),
            _f("volume_z_96", "z-score of volume against the last 96 bars", -50.0, 50.0, 96),
        ),
        "v1 plus slower (8 h at 5-minute bars) return, volatility and volume context",
    ),
}


def get_feature_set(version: str) -> FeatureSet:
    try:
        return FEATURE_SETS[version]
    except KeyError:
        raise UnknownFeatureSetError(
            f"feature set version {version!r} is not declared; known: {sorted(FEATURE_SETS)}"
        ) from None
