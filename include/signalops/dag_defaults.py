"""Defaults every signalops DAG shares. Light on purpose: DAG files import it at parse time."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = "signalops"


def notify_failure(context: Any) -> None:
    """``on_failure_callback``: one alert per failed task try (Slack when configured)."""
    from signalops.alerts import Alert, AlertError, send_alert
    from signalops.config import ConfigError, load_settings

    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    exception = context.get("exception")
    alert = Alert(
        title=f"signalops: {dag_id}.{task_id} failed",
        text=f"`{type(exception).__name__}`: {exception}"[:1500] if exception else "task failed",
        severity="error",
        fields={
            "run": str(context.get("run_id", "?")),
            "try": str(getattr(ti, "try_number", "?")),
        },
        link=getattr(ti, "log_url", None),
    )
    try:
        send_alert(alert, load_settings().alerts)
    except (AlertError, ConfigError) as exc:
        # The task already failed; a broken alert channel must not hide that failure.
        log.error("could not send the failure alert: %s", exc)


def retry_delay() -> timedelta:
    """One minute, or Airflow's ``[core] default_task_retry_delay`` (seconds) where a deployment
    sets it in the environment (the production stack's fault tests wait 5 s)."""
    raw = os.environ.get("AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY", "").strip()
    try:
        seconds = int(raw) if raw else 60
    except ValueError:
        raise ValueError(
            f"AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY={raw!r}: expected whole seconds"
        ) from None
    return timedelta(seconds=max(seconds, 1))


DEFAULT_ARGS: dict[str, Any] = {
    "owner": OWNER,
    "retries": 2,
    "retry_delay": retry_delay(),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "on_failure_callback": notify_failure,
}


@contextmanager
def task_errors() -> Iterator[None]:
    """Inside a task: bad input fails at once (no retries); anything else may be retried."""
    from airflow.sdk.exceptions import AirflowFailException

    from signalops.errors import BadInputError

    try:
        yield
    except BadInputError as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
