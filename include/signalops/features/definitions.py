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
DAILY_EMA_WARMUP = 120  # the daily set's smoothing window: (1 - 1/14)^120 < 1e-3 left
INTRADAY_MAX_MINUTES = 1439
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
    intraday: bool = False  # needs the time of day: meaningless on daily bars


@dataclass(frozen=True)
class FeatureSet:
    version: str
    features: tuple[FeatureDef, ...]
    description: str = ""
    bar_minutes: tuple[int, int] = (1, 1440)  # the bar sizes (minutes) the set is meant for

    def __post_init__(self) -> None:
        intraday = [f.name for f in self.features if f.intraday]
        if intraday and self.bar_minutes[1] > INTRADAY_MAX_MINUTES:
            raise ValueError(
                f"feature set {self.version} has intraday features {intraday} but claims daily bars"
            )

    def applies_to(self, bar_minutes: int) -> bool:
        return self.bar_minutes[0] <= bar_minutes <= self.bar_minutes[1]

    @property
    def bar_sizes(self) -> str:
        low, high = self.bar_minutes
        return f"{low}- to {high}-minute bars"

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
            "bar_minutes": list(self.bar_minutes),
        }


def _f(
    name: str, description: str, lower: float, upper: float, lookback: int, intraday: bool = False
) -> FeatureDef:
    return FeatureDef(name, description, lower, upper, lookback, intraday=intraday)


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
    _f("hour_sin", "sine of the bar's UTC hour of day", -1.0, 1.0, 1, intraday=True),
    _f("hour_cos", "cosine of the bar's UTC hour of day", -1.0, 1.0, 1, intraday=True),
)

# Daily bars: no time of day; volatility and volume enter relative to their own trailing
# level, so that drift means a change of regime, not of the price or volatility era.
_DAILY = (
    *(
        _f(f"ret_{k}", f"log return of close over the last {k} bar(s)", -3.0, 3.0, k)
        for k in (1, 5, 20, 60)
    ),
    _f("ret_z_20", "20-bar log return over its 60-bar volatility (sqrt(20) * rv_60)", -20, 20, 61),
    _f("rsi_14", "Wilder RSI over 14 bars", 0.0, 100.0, DAILY_EMA_WARMUP),
    _f("macd_z", "MACD line (over close) in units of 60-bar volatility", -50, 50, DAILY_EMA_WARMUP),
    _f("bb_position_20", "position of close in the 20-bar 2-sigma Bollinger band", -20, 20, 20),
    _f("stoch_k_14", "stochastic %K: close within the 14-bar high-low range", 0.0, 1.0, 14),
    _f("close_position", "(close - low) / (high - low) of the bar (0.5 when flat)", 0.0, 1.0, 1),
    _f("rv_ratio_5_60", "5-bar over 60-bar realized volatility", 0.0, 50.0, 61),
    _f("rv_ratio_20_250", "20-bar over 250-bar realized volatility", 0.0, 50.0, 251),
    _f("range_ratio_5_60", "mean (high - low) / close over 5 bars vs over 60", 0.0, 50.0, 60),
    _f("volume_z_20", "z-score of volume against the last 20 bars", -50.0, 50.0, 20),
    _f("volume_trend_5_20", "log of 5-bar over 20-bar mean volume", -10.0, 10.0, 20),
)

FEATURE_SETS: dict[str, FeatureSet] = {
    "v1": FeatureSet(
        "v1",
        _CORE,
        "returns, oscillators, volatility, volume and time of day",
        bar_minutes=(1, INTRADAY_MAX_MINUTES),
    ),
    "v2": FeatureSet(
        "v2",
        (
            *_CORE,
            _f("ret_96", "log return of close over the last 96 bars", -3.0, 3.0, 96),
            _f("rv_96", "realized volatility over 96 bars", 0.0, 1.0, 97),
            _f("volume_z_96", "z-score of volume against the last 96 bars", -50.0, 50.0, 96),
        ),
        "v1 plus slower (8 h at 5-minute bars) return, volatility and volume context",
        bar_minutes=(1, INTRADAY_MAX_MINUTES),
    ),
    "d1": FeatureSet(
        "d1",
        _DAILY,
        "daily bars: returns, oscillators, volatility and volume relative to their own level",
        bar_minutes=(1440, 1440),
    ),
}


def get_feature_set(version: str) -> FeatureSet:
    try:
        return FEATURE_SETS[version]
    except KeyError:
        raise UnknownFeatureSetError(
            f"feature set version {version!r} is not declared; known: {sorted(FEATURE_SETS)}"
        ) from None
