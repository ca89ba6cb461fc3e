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


TASK_FAILED_WINDOW = timedelta(hours=1)  # one alert per DAG task an hour, retries included


def notify_failure(context: Any) -> None:
    """``on_failure_callback`` of every task: an alert linked to the task in its run (one per
    DAG task an hour: a task failing every hourly run is one alert, not one per try)."""
    from signalops.alerts import Alert
    from signalops.alerts.ledger import notify
    from signalops.config import ConfigError, load_settings

    ti = context.get("ti") or context.get("task_instance")
    dag_id = str(getattr(ti, "dag_id", "?"))
    task_id = str(getattr(ti, "task_id", "?"))
    run_id = str(context.get("run_id") or getattr(ti, "run_id", "?"))
    exception = context.get("exception")
    try:
        settings = load_settings()
    except ConfigError as exc:
        log.error("could not send the failure alert of %s.%s: %s", dag_id, task_id, exc)
        return
    alert = Alert(
        title=f"signalops: {dag_id}.{task_id} failed",
        text=f"`{type(exception).__name__}`: {exception}"[:1500] if exception else "task failed",
        severity="error",
        fields={"run": run_id, "try": str(getattr(ti, "try_number", "?"))},
        link=settings.airflow_run_url(dag_id, run_id, task_id),
    )
    # The task already failed; a broken alert channel must not hide that failure.
    notify(
        alert, settings, kind="task_failed", key=f"{dag_id}.{task_id}", window=TASK_FAILED_WINDOW
    )


def _run_finished(context: Any, *, failed: bool) -> None:
    """DAG-level callback (run by the dag-processor): record the run; alert when Airflow
    paused the DAG after ``max_consecutive_failed_dag_runs`` failures in a row."""
    from signalops.alerts.dag_runs import run_finished
    from signalops.config import load_settings

    dag = context.get("dag")
    dag_id = str(getattr(dag, "dag_id", "?"))
    run_id = str(context.get("run_id") or "?")
    limit = int(getattr(dag, "max_consecutive_failed_dag_runs", 0) or 0)
    try:
        run_finished(load_settings(), dag_id, run_id, failed=failed, limit=limit)
    except Exception:  # a callback must not fail the dag-processor's work
        log.exception("could not record the %s run %s", dag_id, run_id)


def dag_run_failed(context: Any) -> None:
    _run_finished(context, failed=True)


def dag_run_succeeded(context: Any) -> None:
    _run_finished(context, failed=False)


# The DAG-level callbacks every signalops ``@dag`` takes (``**DAG_CALLBACKS``).
DAG_CALLBACKS: dict[str, Any] = {
    "on_failure_callback": dag_run_failed,
    "on_success_callback": dag_run_succeeded,
}


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
