"""The exporter's gauge families, one builder per source; docs/observability.md lists them.

Each warehouse builder (``drift_gauges``, ``rollout_gauges``, ``live_gauges``,
``alert_gauges``) takes an open connection and the warehouse's table names, and returns no
family when its table does not exist yet. ``alias_gauge`` and ``dag_age_gauge`` call an
outside source (MLflow, Airflow's metadata DB) and record whether it answered on the
``signalops_exporter_source_up`` gauge instead of raising. ``SignalCollector``
(``signalops.cockpit.exporter_collector``) calls them all on every scrape.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric

from signalops.cockpit.exporter_sources import Aliases, DagAges
from signalops.config import as_utc
from signalops.evaluation import metrics as ml
from signalops.warehouse import alerts as alert_rows
from signalops.warehouse import alerts_table, drift_checks_table, outcomes_table, rollouts_table
from signalops.warehouse import drift as drift_rows
from signalops.warehouse import outcomes as outcome_rows
from signalops.warehouse import rollouts as rollout_rows

log = logging.getLogger(__name__)

PREFIX = "signalops_"
ROLLOUT_STATUSES = (
    "active",
    "promoting",
    "promoted",
    "watching",
    "done",
    "rolling_back",
    "rolled_back",
    "superseded",
    "manual",
)


def source_up_gauge() -> GaugeMetricFamily:
    """Filled by the collector: 1 per source read on this scrape, 0 per source that failed."""
    return GaugeMetricFamily(
        f"{PREFIX}exporter_source_up",
        "1 when the source could be read on this scrape (0: see the exporter's log)",
        labels=["source"],
    )


def drift_gauges(conn: sa.Connection, tables: set[str]) -> list[Metric]:
    """The newest window's check per signal (the newest check when windows tie)."""
    from signalops.drift.check import SEVERITIES

    if drift_checks_table.name not in tables:
        return []
    rows = drift_rows.newest_per_signal(conn)
    latest = {r.signal_name: r for r in rows}  # ordered by checked_at: the last wins
    severity = GaugeMetricFamily(
        f"{PREFIX}drift_severity",
        "Severity of the newest drift check ("
        + ", ".join(f"{i} {name}" for i, name in enumerate(SEVERITIES))
        + ")",
        labels=["signal", "version"],
    )
    share = GaugeMetricFamily(
        f"{PREFIX}drift_share_drifted",
        "Share of features drifted in the newest drift check's window",
        labels=["signal", "version"],
    )
    window_end = GaugeMetricFamily(
        f"{PREFIX}drift_window_end_timestamp_seconds",
        "End of the newest drift check's window (Unix time)",
        labels=["signal", "version"],
    )
    for name, r in sorted(latest.items()):
        labels = [str(name), str(r.model_version)]
        severity.add_metric(labels, SEVERITIES.index(r.severity) if r.severity in SEVERITIES else 0)
        share.add_metric(labels, float(r.share_drifted))
        window_end.add_metric(labels, _epoch(r.window_end))
    return [severity, share, window_end]


def rollout_gauges(conn: sa.Connection, tables: set[str]) -> list[Metric]:
    """Each signal's current rollout: the active one, else the newest."""
    if rollouts_table.name not in tables:
        return []
    current = rollout_rows.current_per_signal(conn)
    step = GaugeMetricFamily(
        f"{PREFIX}rollout_step",
        "Step of the current rollout (0: shadow); its challenger is the version",
        labels=["signal", "version", "champion"],
    )
    weight = GaugeMetricFamily(
        f"{PREFIX}rollout_weight",
        "Share of traffic the current rollout's challenger gets (0..1)",
        labels=["signal", "version", "champion"],
    )
    status = GaugeMetricFamily(
        f"{PREFIX}rollout_status",
        "1 for the current rollout's status, 0 for the others (a state set)",
        labels=["signal", "version", "status"],
    )
    for name, r in sorted(current.items()):
        labels = [str(name), str(r.challenger_version), str(r.champion_version or "")]
        step.add_metric(labels, int(r.step))
        weight.add_metric(labels, float(r.weight))
        for state in dict.fromkeys([*ROLLOUT_STATUSES, str(r.status)]):
            status.add_metric([*labels[:2], state], 1 if state == r.status else 0)
    return [step, weight, status]


def live_gauges(
    conn: sa.Connection, tables: set[str], now: datetime, live_window: timedelta
) -> list[Metric]:
    """Accuracy and log loss per version over the outcomes matured in the live window
    (the formulas of ``signalops.evaluation.metrics``, as the canary's guards use)."""
    if outcomes_table.name not in tables:
        return []
    rows = outcome_rows.since(conn, now - live_window)
    grouped: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for r in rows:
        grouped.setdefault((str(r[0]), str(r[1])), []).append((r[2], r[3]))
    window = f"{live_window.total_seconds():.0f} s"
    accuracy = GaugeMetricFamily(
        f"{PREFIX}live_accuracy",
        f"Accuracy of the version's matured predictions of the last {window}",
        labels=["signal", "version"],
    )
    log_loss = GaugeMetricFamily(
        f"{PREFIX}live_log_loss",
        f"Log loss of the version's matured predictions of the last {window}",
        labels=["signal", "version"],
    )
    count = GaugeMetricFamily(
        f"{PREFIX}live_outcomes",
        f"Matured predictions (outcomes) of the version in the last {window}",
        labels=["signal", "version"],
    )
    for (signal, version), values in sorted(grouped.items()):
        p = np.array([v[0] for v in values], dtype=np.float64)
        y = np.array([v[1] for v in values], dtype=np.float64)
        accuracy.add_metric([signal, version], ml.accuracy(y, p))
        log_loss.add_metric([signal, version], ml.log_loss(y, p))
        count.add_metric([signal, version], len(values))
    return [accuracy, log_loss, count]


def alert_gauges(conn: sa.Connection, tables: set[str]) -> list[Metric]:
    """The alert ledger's count per kind and latest status."""
    if alerts_table.name not in tables:
        return []
    family = GaugeMetricFamily(
        f"{PREFIX}alerts",
        "Alerts in the ledger (one per dedup key) by kind and latest status",
        labels=["kind", "status"],
    )
    for kind, status, n in alert_rows.count_by_kind_status(conn):
        family.add_metric([str(kind), str(status)], int(n))
    return [family]


def alias_gauge(aliases: Aliases, signals: list[str], up: GaugeMetricFamily) -> Metric:
    """Each signal's registry aliases; ``up`` gets the registry's 1 or 0."""
    family = GaugeMetricFamily(
        f"{PREFIX}model_alias",
        "1 for each registry alias (champion, challenger, previous-champion) and its version",
        labels=["signal", "alias", "version"],
    )
    try:
        for signal in signals:
            for alias, version in sorted(aliases(signal).items()):
                family.add_metric([signal, alias, str(version)], 1)
        up.add_metric(["registry"], 1)
    except Exception as exc:  # MLflow down must not take the warehouse gauges with it
        log.warning("exporter: registry aliases not readable: %s", exc)
        up.add_metric(["registry"], 0)
    return family


def dag_age_gauge(dag_ages: DagAges, up: GaugeMetricFamily) -> Metric:
    """Each DAG's time since its last success; ``up`` gets Airflow's 1 or 0."""
    family = GaugeMetricFamily(
        f"{PREFIX}dag_last_success_age_seconds",
        "Seconds since the DAG's newest successful run ended (Airflow metadata DB)",
        labels=["dag_id"],
    )
    try:
        for dag_id, age in sorted(dag_ages().items()):
            family.add_metric([dag_id], max(0.0, float(age)))
        up.add_metric(["airflow"], 1)
    except Exception as exc:  # a metadata DB hiccup must not fail the scrape
        log.warning("exporter: Airflow DAG runs not readable: %s", exc)
        up.add_metric(["airflow"], 0)
    return family


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).timestamp()
