"""The DAG-paused alert: Airflow pauses a DAG after ``max_consecutive_failed_dag_runs``
failed runs in a row, and says so only in the scheduler's log.

Every signalops DAG's DAG-level callbacks (``signalops.dag_defaults.dag_callbacks``) record
each finished run in the warehouse table ``dag_runs``. When a failed run makes the newest
``limit`` runs all failed (the scheduler's own rule, which ordered them by ``run_after``;
here by when they finished), the DAG has just been paused: one alert, linked to the run
that tipped it. Recording is idempotent per run, so a callback retried or delivered twice
counts once; a success between failures starts the count again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from signalops.alerts.ledger import Outcome, notify
from signalops.alerts.slack import Alert
from signalops.config import Settings

if TYPE_CHECKING:
    import sqlalchemy as sa

log = logging.getLogger(__name__)

PAUSED_WINDOW = timedelta(hours=1)  # one alert per pause, however the callbacks repeat


def _record(conn: sa.Connection, dag_id: str, run_id: str, failed: bool) -> None:
    """Store one finished run (idempotent: the same run stored twice is one row)."""
    from signalops.warehouse import alerts as alert_rows

    state = "failed" if failed else "success"
    alert_rows.record_run(conn, dag_id, run_id, state, datetime.now(UTC))


def _failed_in_a_row(conn: sa.Connection, dag_id: str, limit: int) -> int:
    """How many of the DAG's newest runs (at most ``limit``) failed, counted back from the
    newest until the first success."""
    from signalops.warehouse import alerts as alert_rows

    states = alert_rows.newest_run_states(conn, dag_id, limit)
    count = 0
    for state in states:
        if state != "failed":
            break
        count += 1
    return count


def run_finished(
    settings: Settings, dag_id: str, run_id: str, *, failed: bool, limit: int
) -> Outcome | None:
    """Record the run; when it is the ``limit``-th failure in a row, alert that Airflow
    paused the DAG. Returns the alert's outcome, ``None`` when there was none to send."""
    from signalops.warehouse import Warehouse

    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        with warehouse.begin() as conn:  # one connection: record, then count
            _record(conn, dag_id, run_id, failed)
            streak = _failed_in_a_row(conn, dag_id, limit) if failed and limit > 0 else 0
    if streak < limit or not failed or limit <= 0:
        return None
    alert = Alert(
        title=f"signalops: DAG {dag_id} paused after {limit} failed runs in a row",
        text=f"Airflow paused `{dag_id}`: its last {limit} runs failed. Nothing runs on its "
        "schedule until it is fixed and unpaused (`airflow dags unpause "
        f"{dag_id}` or the toggle in the UI).",
        severity="error",
        fields={"dag": dag_id, "last run": run_id},
        link=settings.airflow_run_url(dag_id, run_id),
    )
    return notify(
        alert, settings, kind="dag_paused", key=f"{dag_id}:{run_id}", window=PAUSED_WINDOW
    )
