"""One typed settings object: defaults < YAML file < SIGNALOPS_* environment variables.

The YAML file is the one named by ``SIGNALOPS_CONFIG``, else ``signalops.yaml`` in the
working directory when it exists. Environment variables use ``__`` for nesting:
``SIGNALOPS_WAREHOUSE__URL=postgresql+psycopg2://...`` sets ``warehouse.url``; list values
are comma separated (``SIGNALOPS_MARKET__SYMBOLS=AAA,BBB``).

Loading has no side effects (no folders are created): callers that write create what they
write. A bad setting raises :class:`ConfigError` naming the setting and where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from signalops.calendar import CALENDARS, CalendarKind, MarketCalendar, parse_hhmm
from signalops.errors import BadInputError

ENV_PREFIX = "SIGNALOPS_"
CONFIG_ENV = "SIGNALOPS_CONFIG"
DEFAULT_CONFIG_FILE = "signalops.yaml"


class ConfigError(BadInputError):
    """A setting is missing, malformed or out of range; the message names it and its source."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SyntheticSettings(_Section):
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


class MarketSettings(_Section):
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


class FeatureSettings(_Section):
    feature_set_version: str = Field(description="feature set (bar-size default)")
    horizon_bars: int = Field(gt=0, description="label: direction of the return over H bars")


class ValidationSettings(_Section):
    """The Great Expectations gate on bars (after collection) and features (after compute)."""

    max_gap_bars: int = Field(
        gt=0, description="most expected bars (on the market calendar) missing in a row"
    )
    max_null_share: float = Field(
        0.0, ge=0, lt=1, description="share of null values a feature column may have"
    )


class DriftSettings(_Section):
    """The hourly drift monitor. Severity rests on effect sizes, never on p-values alone."""

    window_bars: int = Field(gt=0, description="current window: the last N bars of each symbol")
    min_rows: int = Field(gt=0, description="fewer current rows: the check is skipped")
    method: Literal["psi", "ks", "wasserstein"] = Field(
        "psi", description="what flags a feature as drifted"
    )
    psi_moderate: float = Field(0.1, gt=0, description="PSI from here: moderate drift")
    psi_significant: float = Field(0.2, gt=0, description="PSI from here: significant drift")
    ks_p_value: float = Field(0.05, gt=0, lt=1, description="KS: p below this ...")
    ks_min_statistic: float = Field(0.1, gt=0, le=1, description="... and D at least this")
    wasserstein_threshold: float = Field(
        0.1, gt=0, description="normalized Wasserstein distance (in reference std units)"
    )
    share_medium: float = Field(0.2, gt=0, le=1, description="drifted share: medium")
    share_high: float = Field(0.5, gt=0, le=1, description="drifted share: high")
    accuracy_drop_medium: float = Field(0.05, gt=0, le=1)
    accuracy_drop_high: float = Field(0.10, gt=0, le=1)
    min_outcomes: int = Field(gt=0, description="matured labels needed for label drift")
    report_sample_rows: int = Field(5_000, gt=0, description="rows of each side in Evidently")
    realert_hours: float = Field(
        24.0, gt=0, description="the same (or lower) severity alerts again only after this"
    )
    # Calibration (README, "Drift: how severity is calibrated"): the first two are used when
    # retrain builds the reference profile, the last one also at check time.
    null_quantile: float = Field(
        0.99, gt=0.5, lt=1, description="critical value: this quantile of reference windows"
    )
    null_blocks: int = Field(
        200, ge=50, le=5000, description="reference windows drawn per window size"
    )
    significance: float = Field(
        0.005,
        gt=0,
        lt=0.5,
        description="level of each overall test: drifted-feature count, score PSI, accuracy",
    )


class RolloutSettings(_Section):
    """The canary state machine: steps, how long each lasts, the guards."""

    steps: tuple[float, ...] = Field(
        (0.0, 0.01, 0.10, 0.50, 1.0), description="canary weights; 0 = shadow, 1 = promote"
    )
    min_step_minutes: float = Field(60.0, ge=0, description="time at a step before advancing")
    max_step_hours: float = Field(
        24.0, gt=0, description="held at one step longer than this: the rollout-stuck alert"
    )
    min_predictions: int = Field(500, gt=0, description="challenger rows at a step to judge")
    max_latency_ratio: float = Field(1.5, gt=0, description="challenger p95 / champion p95")
    latency_slack_ms: float = Field(2.0, ge=0, description="absolute slack on that ratio")
    max_score_psi: float = Field(0.25, gt=0, description="challenger vs champion scores")
    min_compare_rows: int = Field(
        300, gt=0, description="challenger rows before latency p95 and score PSI judge"
    )
    min_agreement: float = Field(
        0.6, ge=0, le=1, description="shadow: same BUY/SELL/HOLD as the champion"
    )
    min_outcomes: int = Field(200, gt=0, description="matured outcomes per version to judge")
    significance: float = Field(0.05, gt=0, lt=1, description="one-sided test level")

    @field_validator("steps", mode="before")
    @classmethod
    def _split_steps(cls, value: Any) -> Any:
        return tuple(float(v) for v in value.split(",")) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _steps_rise_to_one(self) -> RolloutSettings:
        steps = list(self.steps)
        if not steps or steps != sorted(steps) or steps[-1] != 1.0 or steps[0] < 0:
            raise ValueError(f"rollout.steps must rise from >= 0 to 1.0, got {steps}")
        return self


class WarehouseSettings(_Section):
    url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under state_dir")


class OnlineStoreSettings(_Section):
    redis_url: str | None = Field(None, description="use Redis when set, else a warehouse table")
    ttl_seconds: int = Field(7 * 24 * 3600, gt=0)
    key_prefix: str = "signalops"


class XGBoostParams(_Section):
    """Hyperparameters of ``xgboost.train`` (overridable per run from the DAG's params)."""

    max_depth: int = Field(4, ge=1, le=16)
    eta: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(5.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    num_boost_round: int = Field(400, ge=1, le=5000)
    early_stopping_rounds: int = Field(30, ge=1)


class TrainingSettings(_Section):
    window_days: int = Field(gt=0, description="training window ending at the run's end")
    min_rows: int = Field(gt=0, description="refuse to train on fewer labeled rows")
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5, description="out-of-time holdout share")
    cv_folds: int = Field(4, ge=2, le=20)
    seed: int = 42
    nthread: int = Field(2, ge=1)
    balance_classes: bool = Field(True, description="scale_pos_weight = negatives / positives")
    max_parity_error: float = Field(1e-5, gt=0)
    xgboost: XGBoostParams = XGBoostParams()


class EvaluationSettings(_Section):
    """The holdout report and the promotion gate (rules: ``signalops.evaluation.gate.RULES``)."""

    primary_metric: Literal["roc_auc", "log_loss", "accuracy", "brier"] = "roc_auc"
    non_inferiority_margin: float = Field(
        0.01,
        ge=0,
        description="loss vs the champion on the primary metric (its units, e.g. 0.01 AUC) "
        "that counts as material: rejected only when the whole paired-bootstrap CI of "
        "challenger - champion lies below -margin",
    )
    baseline_margin: float = Field(
        0.0,
        ge=0,
        description="how far the challenger may trail the naive baseline (primary metric and "
        "log loss, in their units); 0: it must beat it",
    )
    bootstrap_samples: int = Field(500, ge=50)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    min_roc_auc: float = Field(0.52, ge=0, le=1)
    max_log_loss: float = Field(0.70, gt=0)
    min_sharpe: float = Field(
        0.0, description="the holdout backtest's annualized Sharpe after costs must exceed this"
    )
    strategy: Literal["long_short", "long_flat"] = "long_short"
    threshold: float = Field(0.5, gt=0, lt=1)
    cost_bps: float = Field(1.0, ge=0, description="cost per unit of position change, basis points")
    first_model_becomes_champion: bool = True

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # The old champion rule (lower CI end >= -tolerance) failed any small holdout; its
        # setting is gone rather than silently reinterpreted.
        if isinstance(data, Mapping) and "tolerance" in data:
            raise ValueError(
                "evaluation.tolerance was replaced by evaluation.non_inferiority_margin "
                "(a challenger is rejected only when the whole CI lies below -margin)"
            )
        return data


class MlflowSettings(_Section):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking server; default: SQLite store under state_dir"
    )


class AlertSettings(_Section):
    slack_webhook_url: str | None = None
    slack_token: str | None = None
    slack_channel: str = "#signalops-alerts"
    slack_base_url: str | None = Field(None, description="override the Slack API base URL")
    max_per_minute: int = Field(
        20,
        gt=0,
        description="per-channel rate limit: over it an alert is recorded as rate_limited, "
        "not sent, and its next occurrence is sent",
    )


class LinkSettings(_Section):
    """Base URLs that alerts and the Signals page link to (never file paths)."""

    airflow_url: str = Field(
        "http://localhost:8080", description="the Airflow UI / api-server, as users reach it"
    )
    mlflow_url: str | None = Field(
        None,
        description="the MLflow UI; default: mlflow.tracking_uri when it is http(s), "
        "else http://localhost:5000 (`make airflow` starts one there)",
    )

    @field_validator("airflow_url", "mlflow_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/") if value else value


class RiskSettings(_Section):
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


class EnsembleSettings(_Section):
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


class ServingSettings(_Section):
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


def bar_defaults(bar_minutes: int) -> dict[str, dict[str, Any]]:
    """The settings that depend on the bar size, by section: the one place they are derived.

    Three rows (README, "Defaults by bar size"): intraday bars (< 60 min), hourly bars
    (60 min to < 1 day) and daily bars. Counts are in bars of the series; the intraday and
    hourly rows scale with the bar so that each keeps the same span of time.
    """
    if bar_minutes >= 1440:
        return {
            "market": {"calendar": "weekdays"},
            "features": {"feature_set_version": "d1", "horizon_bars": 5},  # a week
            "training": {"window_days": 3650, "min_rows": 500},  # ten years
            "drift": {"window_bars": 63, "min_rows": 40, "min_outcomes": 40},  # a quarter
            "validation": {"max_gap_bars": 10},  # two weeks of sessions
            "serving": {"max_feature_age_s": 4 * 86400.0},  # Friday's bar on a long weekend
        }
    if bar_minutes >= 60:
        return {
            "market": {"calendar": "always"},
            "features": {"feature_set_version": "v1", "horizon_bars": max(1, 360 // bar_minutes)},
            "training": {"window_days": 365, "min_rows": 2000},
            "drift": {
                "window_bars": max(1, 7200 // bar_minutes),  # five days around the clock
                "min_rows": 60,
                "min_outcomes": 60,
            },
            "validation": {"max_gap_bars": max(1, 5760 // bar_minutes)},  # four days
            "serving": {"max_feature_age_s": 3 * 86400.0},  # Friday's bar on Sunday night
        }
    return {
        "market": {"calendar": "always"},
        "features": {
            "feature_set_version": "v1",
            "horizon_bars": max(1, round(60 / bar_minutes)),  # an hour
        },
        "training": {"window_days": 30, "min_rows": 5000},
        "drift": {
            "window_bars": max(1, round(1440 / bar_minutes)),  # a day
            "min_rows": 200,
            "min_outcomes": 100,
        },
        "validation": {"max_gap_bars": max(1, round(4320 / bar_minutes))},  # three days
        # market_data collects hourly: the newest vector is up to an hour old, plus 3 bars
        "serving": {"max_feature_age_s": 3600.0 + 3 * 60.0 * bar_minutes},
    }


class Settings(_Section):
    state_dir: Path = Path(".signalops")
    signal_name: str = "direction_1h"
    # Sections with bar-size dependent settings are filled by _bar_defaults (no default here).
    market: MarketSettings
    features: FeatureSettings
    warehouse: WarehouseSettings = WarehouseSettings()
    validation: ValidationSettings
    drift: DriftSettings
    rollout: RolloutSettings = RolloutSettings()
    online_store: OnlineStoreSettings = OnlineStoreSettings()
    mlflow: MlflowSettings = MlflowSettings()
    training: TrainingSettings
    evaluation: EvaluationSettings = EvaluationSettings()
    alerts: AlertSettings = AlertSettings()
    links: LinkSettings = LinkSettings()
    serving: ServingSettings

    @model_validator(mode="before")
    @classmethod
    def _bar_defaults(cls, data: Any) -> Any:
        """Settings not given explicitly take the bar size's default (``bar_defaults``)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        market = data.get("market") or {}
        bar_minutes = (
            market.bar_minutes
            if isinstance(market, MarketSettings)
            else market.get("bar_minutes", MarketSettings.model_fields["bar_minutes"].default)
        )
        try:
            bar_minutes = int(bar_minutes)
        except (TypeError, ValueError):
            bar_minutes = 0
        if not 0 < bar_minutes <= 1440:
            bar_minutes = MarketSettings.model_fields["bar_minutes"].default
            # the market section's own validation names the bad value
        for section, values in bar_defaults(bar_minutes).items():
            given = data.get(section)
            if isinstance(given, BaseModel):
                continue
            data[section] = {**values, **(given or {})}
        return data

    @model_validator(mode="after")
    def _feature_set_fits_bars(self) -> Settings:
        from signalops.features.definitions import FEATURE_SETS

        feature_set = FEATURE_SETS.get(self.features.feature_set_version)
        if feature_set is not None and not feature_set.applies_to(self.market.bar_minutes):
            raise ValueError(
                f"features.feature_set_version {feature_set.version!r} is for "
                f"{feature_set.bar_sizes}, not {self.market.bar_minutes}-minute bars; "
                f"feature sets for this bar size: "
                f"{[v for v, f in FEATURE_SETS.items() if f.applies_to(self.market.bar_minutes)]}"
            )
        return self

    @property
    def warehouse_url(self) -> str:
        return self.warehouse.url or f"sqlite:///{self.state_dir.resolve() / 'warehouse.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.state_dir.resolve() / 'mlflow.db'}"

    @property
    def mlflow_ui_url(self) -> str:
        """Where users open MLflow (links from alerts and the Signals page)."""
        if self.links.mlflow_url:
            return self.links.mlflow_url
        uri = self.mlflow.tracking_uri or ""
        if uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
        return "http://localhost:5000"

    @property
    def signals_url(self) -> str:
        """The Signals page (the signalops Airflow plugin, mounted under /signalops)."""
        return f"{self.links.airflow_url}/signalops/"

    def signal_page_url(self, signal: str | None = None) -> str:
        """One signal's section of the Signals page."""
        from urllib.parse import quote

        return f"{self.signals_url}signals/{quote(signal or self.signal_name, safe='')}"

    def airflow_run_url(self, dag_id: str, run_id: str, task_id: str | None = None) -> str:
        """A DAG run (or one of its task instances) in the Airflow 3 UI."""
        from urllib.parse import quote

        url = (
            f"{self.links.airflow_url}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
        )
        return f"{url}/tasks/{quote(task_id, safe='')}" if task_id else url

    @property
    def mlflow_artifact_root(self) -> Path:
        return self.state_dir.resolve() / "mlflow-artifacts"

    @property
    def lake_dir(self) -> Path:
        return self.state_dir / "lake"

    @property
    def staging_dir(self) -> Path:
        return self.state_dir / "staging"


def load_settings(
    env: Mapping[str, str] | None = None, config_file: str | Path | None = None
) -> Settings:
    """Build the settings from defaults, the YAML file and the environment."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    origins: dict[tuple[str, ...], str] = {}

    path = _config_path(env, config_file)
    if path is not None:
        file_values = _read_yaml(path)
        _merge(merged, file_values, origins, f"file {path}")

    env_values: dict[str, Any] = {}
    env_origins: dict[tuple[str, ...], str] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        node = env_values
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another setting")
        node[keys[-1]] = None if value == "" else value
        env_origins[keys] = f"environment variable {name}"
    _merge(merged, env_values, origins, "environment", env_origins)

    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            loc = tuple(str(part) for part in error["loc"])
            source = _find_origin(origins, loc)
            setting = ".".join(loc) or "(settings)"
            got = f" (got {error['input']!r})" if loc and "input" in error else ""
            lines.append(f"  {setting}: {error['msg']}{got} [from {source}]")
        raise ConfigError("invalid signalops settings:\n" + "\n".join(lines)) from None


def _config_path(env: Mapping[str, str], config_file: str | Path | None) -> Path | None:
    if config_file is not None:
        path = Path(config_file)
    elif env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    else:
        default = Path(DEFAULT_CONFIG_FILE)
        return default if default.is_file() else None
    if not path.is_file():
        raise ConfigError(f"config file {path} (from {CONFIG_ENV} or argument) does not exist")
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _merge(
    into: dict[str, Any],
    values: Mapping[str, Any],
    origins: dict[tuple[str, ...], str],
    source: str,
    detailed: Mapping[tuple[str, ...], str] | None = None,
    prefix: tuple[str, ...] = (),
) -> None:
    for key, value in values.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key, {}), dict):
            _merge(into.setdefault(key, {}), value, origins, source, detailed, path)
        else:
            into[key] = value
            origins[path] = (detailed or {}).get(path, source)


def _find_origin(origins: Mapping[tuple[str, ...], str], loc: tuple[str, ...]) -> str:
    for size in range(len(loc), 0, -1):
        if loc[:size] in origins:
            return origins[loc[:size]]
    # An error on a whole section (e.g. an unknown one) names what set its keys.
    below = sorted({source for key, source in origins.items() if key[: len(loc)] == loc})
    return ", ".join(below) if below else "defaults"


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one (as SQLite returns them) is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
