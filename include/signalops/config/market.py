"""Settings of the data side: the market and its bars, the feature set, data validation.

``market`` says where bars come from (synthetic, csv/parquet, postgres), which symbols,
the bar size and the calendar the market keeps; ``features`` picks the feature set and the
label horizon; ``validation`` tunes the Great Expectations gate on bars and features.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from signalops.calendar import CALENDARS, CalendarKind, MarketCalendar, parse_hhmm
from signalops.config.base import Section, as_utc


class SyntheticSettings(Section):
    """The deterministic synthetic market (the embedded default source)."""

    seed: int = 7
    origin: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    regime_bars: int = Field(864, gt=0, description="bars per regime (drift/volatility/AR)")
    shift_at: datetime | None = Field(None, description="inject a distribution shift from here")
    shift_volatility_factor: float = Field(2.5, gt=0)
    shift_drift: float = Field(-2e-4, description="added log-return per bar after shift_at")
    shift_volume_factor: float = Field(3.0, gt=0)
    trend_strength: float = Field(
        0.15, ge=0, description="latent trend, as a fraction of the bar volatility"
    )
    trend_bars: int = Field(144, gt=0, description="latent trend persistence (bars)")

    @field_validator("origin", "shift_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return as_utc(value) if value is not None else None


class MarketSettings(Section):
    source: Literal["synthetic", "csv", "parquet", "postgres"] = "synthetic"
    symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD", "SOL-USD", "ADA-USD", "XRP-USD")
    bar_minutes: int = Field(5, gt=0, le=1440)
    calendar: CalendarKind = Field(
        description=f"which bar slots the market fills: one of {CALENDARS} (bar-size default)"
    )
    timezone: str = Field("UTC", description="weekdays/sessions: the exchange's time zone")
    session: tuple[str, str] | None = Field(
        None, description='sessions: ["HH:MM", "HH:MM"] local open and close, Monday..Friday'
    )
    catchup_max_bars: int = Field(
        2016,
        ge=0,
        description="a scheduled market_data run starts at the warehouse's newest bar when it "
        "lags by up to this many bars (2016: a week of 5-minute bars); beyond: it fails with "
        "the backfill command",
    )
    path: str | None = Field(None, description="csv/parquet: a file, a directory or a glob")
    postgres_url: str | None = None
    postgres_table: str | None = None
    postgres_query: str | None = Field(
        None, description="SQL with :start and :end bind parameters (and optionally :symbols)"
    )
    synthetic: SyntheticSettings = SyntheticSettings()

    @field_validator("symbols", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return (
            tuple(s.strip() for s in value.split(",") if s.strip())
            if isinstance(value, str)
            else value
        )

    @field_validator("symbols")
    @classmethod
    def _non_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one symbol is required")
        if len(set(value)) != len(value):
            raise ValueError(f"symbols repeat: {list(value)}")
        return value

    @model_validator(mode="after")
    def _source_needs(self) -> MarketSettings:
        if self.source in ("csv", "parquet") and not self.path:
            raise ValueError(f"market.path is required when market.source is {self.source!r}")
        if self.source == "postgres":
            if not self.postgres_url:
                raise ValueError("market.postgres_url is required when market.source is 'postgres'")
            if bool(self.postgres_table) == bool(self.postgres_query):
                raise ValueError(
                    "set exactly one of market.postgres_table or market.postgres_query"
                )
        return self

    @field_validator("session", mode="before")
    @classmethod
    def _split_session(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else value

    @field_validator("session")
    @classmethod
    def _session(cls, value: tuple[str, str] | None) -> tuple[str, str] | None:
        if value is not None:
            first, last = (parse_hhmm(v, "market.session") for v in value)
            if first >= last:
                raise ValueError(f"market.session opens at {value[0]}, after it closes")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def bar(self) -> timedelta:
        return timedelta(minutes=self.bar_minutes)

    @property
    def market_calendar(self) -> MarketCalendar:
        session = (
            (parse_hhmm(self.session[0], "session"), parse_hhmm(self.session[1], "session"))
            if self.session
            else None
        )
        return MarketCalendar(self.calendar, self.bar, self.timezone, session)


class FeatureSettings(Section):
    feature_set_version: str = Field(description="feature set (bar-size default)")
    horizon_bars: int = Field(gt=0, description="label: direction of the return over H bars")


class ValidationSettings(Section):
    """The Great Expectations gate on bars (after collection) and features (after compute)."""

    max_gap_bars: int = Field(
        gt=0, description="most expected bars (on the market calendar) missing in a row"
    )
    max_null_share: float = Field(
        0.0, ge=0, lt=1, description="share of null values a feature column may have"
    )
