"""The one settings object, :class:`Settings`, and the defaults that follow the bar size.

``Settings`` nests one section per concern (market, features, training, serving, ...,
each defined in a sibling module). The settings that depend on the bar size (windows,
horizons, the feature set, minimum row counts) have no fixed default: ``bar_defaults``
derives them, in one place, from ``market.bar_minutes``; explicit values win.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, model_validator

from signalops.config.base import Section
from signalops.config.explain import ExplainSettings
from signalops.config.lifecycle import (
    DriftSettings,
    EvaluationSettings,
    RolloutSettings,
    TrainingSettings,
    TuningSettings,
)
from signalops.config.market import FeatureSettings, MarketSettings, ValidationSettings
from signalops.config.services import (
    AlertSettings,
    LinkSettings,
    MlflowSettings,
    OnlineStoreSettings,
    WarehouseSettings,
)
from signalops.config.serving import ServingSettings


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


class Settings(Section):
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
    tuning: TuningSettings = TuningSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    alerts: AlertSettings = AlertSettings()
    links: LinkSettings = LinkSettings()
    serving: ServingSettings
    explain: ExplainSettings = ExplainSettings()

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
