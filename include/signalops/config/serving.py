"""Settings of the sidecar (``python -m signalops.serving``): the server, the signals it
serves (ensembles included), BUY/SELL/HOLD thresholds, and the risk guard."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from signalops.config.base import Section


class RiskSettings(Section):
    """The sidecar's risk guard: a blocked signal becomes HOLD with the reason."""

    min_confidence: float = Field(0.0, ge=0, le=1, description="max(p, 1-p) below this: HOLD")
    timezone: str = "UTC"
    trading_hours: tuple[str, str] | None = Field(
        None, description='["HH:MM", "HH:MM"] local trading window; none: around the clock'
    )
    trading_days: tuple[int, ...] = Field(
        (0, 1, 2, 3, 4, 5, 6), description="ISO weekdays minus one: 0 = Monday"
    )
    max_trades_per_day: int = Field(10_000, ge=0)
    max_daily_loss: float = Field(0.05, gt=0, description="circuit breaker, fraction of equity")
    max_drawdown: float = Field(0.10, gt=0, description="circuit breaker, fraction from peak")
    max_consecutive_losses: int = Field(5, ge=1)
    max_trade_pnl: float = Field(
        1.0,
        gt=0,
        description="largest |pnl| a trade result may report (fraction of equity); larger: 422",
    )
    breaker_cooldown_s: float | None = Field(
        None,
        gt=0,
        description="a tripped breaker closes on its own after this long; none: it stays open "
        "until an admin reset (the daily-loss breaker: until the next trading day)",
    )
    max_position_size: float = Field(
        1.0, gt=0, description="cap on a suggested position, fraction of equity"
    )
    min_position_size: float = Field(
        0.0, ge=0, description="a BUY/SELL whose suggested size is below this: HOLD"
    )
    volatility_target: float | None = Field(
        None,
        gt=0,
        description="size = edge (2 * confidence - 1) x volatility_target / the row's "
        "volatility feature; none: size = edge",
    )
    volatility_feature: str = Field(
        "rv_48",
        description="the feature that holds a row's volatility (same units as "
        "volatility_target); a model without it is sized by its edge alone",
    )
    max_symbol_exposure: float | None = Field(
        None, gt=0, description="cap on one symbol's position, fraction of equity; none: no cap"
    )
    max_total_exposure: float | None = Field(
        None,
        gt=0,
        description="cap on the sum of open positions' sizes, fraction of equity; none: no cap",
    )
    position_ttl_s: float | None = Field(
        3600.0,
        gt=0,
        description="how long a suggested position counts against exposure unless a trade "
        "result or the next signal on its symbol replaces it; none: until then",
    )


class EnsembleSettings(Section):
    """A served name whose P(up) combines several signals' models."""

    name: str
    members: dict[str, float] = Field(description="signal -> weight (> 0)")
    method: Literal["average", "vote"] = Field(
        "average", description="weighted mean of P(up), or weighted share of up-votes"
    )

    @field_validator("members")
    @classmethod
    def _weights(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(w <= 0 for w in value.values()):
            raise ValueError("an ensemble needs members with positive weights")
        return value


class ServingSettings(Section):
    """The sidecar (``python -m signalops.serving``)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(0, ge=0, description="server processes; 0: one per core")
    bench_null_route: bool = Field(
        False,
        description="POST /null: the HTTP stack alone, the benchmark's baseline (bench/serve.py "
        "turns it on; off in production)",
    )
    signals: tuple[str, ...] = Field(
        (), description="registered models to serve; default: signal_name"
    )
    poll_interval_s: float = Field(
        5.0,
        gt=0,
        description="how often aliases are polled (the fallback when online_store.redis_url "
        "is set: registry change notifications on Redis swap within about a second)",
    )
    retained_versions: int = Field(
        3,
        ge=0,
        description="versions per signal kept loaded after they lose their alias: a rollback "
        "to one swaps without a download, and callers can pin them",
    )
    max_body_bytes: int = Field(1_048_576, gt=0)
    max_batch_rows: int = Field(1_000, gt=0)
    max_feature_age_s: float = Field(gt=0, description="online features older: 422")
    feature_cache_ttl_s: float = Field(1.0, ge=0, description="in-process online-feature cache")
    buy_threshold: float = Field(0.55, gt=0, lt=1)
    sell_threshold: float = Field(0.45, gt=0, lt=1)
    admin_token: str | None = Field(
        None, description="bearer token for /v1/admin/*; from SIGNALOPS_SERVING__ADMIN_TOKEN"
    )
    shadow: bool = Field(
        True, description="score every request with the challenger too while its weight is 0"
    )
    log_batch_size: int = Field(500, gt=0)
    log_flush_interval_s: float = Field(0.05, gt=0)
    risk: RiskSettings = RiskSettings()
    ensembles: tuple[EnsembleSettings, ...] = Field(
        (), description="combined signals served under their own name (YAML)"
    )

    @field_validator("signals", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return (
            tuple(v.strip() for v in value.split(",") if v.strip())
            if isinstance(value, str)
            else value
        )

    @model_validator(mode="after")
    def _thresholds(self) -> ServingSettings:
        if self.sell_threshold > self.buy_threshold:
            raise ValueError("serving.sell_threshold must not exceed serving.buy_threshold")
        return self

    def label(self, p: float) -> str:
        """The call a probability of "up" makes: BUY, SELL or HOLD (before the risk guard)."""
        if p >= self.buy_threshold:
            return "BUY"
        if p <= self.sell_threshold:
            return "SELL"
        return "HOLD"
