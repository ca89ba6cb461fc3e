"""Settings of the services signalops talks to: warehouse, online store, MLflow, Slack,
and the base URLs that alerts and the Signals page link to."""

from __future__ import annotations

from pydantic import Field, field_validator

from signalops.config.base import Section


class WarehouseSettings(Section):
    url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under state_dir")


class OnlineStoreSettings(Section):
    redis_url: str | None = Field(None, description="use Redis when set, else a warehouse table")
    ttl_seconds: int = Field(7 * 24 * 3600, gt=0)
    key_prefix: str = "signalops"


class MlflowSettings(Section):
    tracking_uri: str | None = Field(
        None, description="MLflow tracking server; default: SQLite store under state_dir"
    )


class AlertSettings(Section):
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


class LinkSettings(Section):
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
