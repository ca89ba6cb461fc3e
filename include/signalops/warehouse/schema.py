"""The warehouse schema: one SQLAlchemy Core metadata declares every table.

Timestamps are stored in UTC (``timestamptz`` on PostgreSQL, UTC text on SQLite). The
queries on each table live beside it in this package (``bars``, ``drift``, ``outcomes``,
``explanations``, ``rollouts``, ``alerts``, ``predictions``, ``online_features``);
``create_all`` is idempotent.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from signalops.data.bars import NUMERIC_COLUMNS

log = logging.getLogger(__name__)

metadata = sa.MetaData()

bars_table = sa.Table(
    "bars",
    metadata,
    sa.Column("symbol", sa.String(64), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    *(sa.Column(c, sa.Float(53), nullable=False) for c in NUMERIC_COLUMNS),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
)

online_features_table = sa.Table(
    "online_features",
    metadata,
    sa.Column("feature_set_version", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(64), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def prediction_key() -> list[sa.Column[Any]]:
    """A prediction's key, shared by the tables about predictions: one row per (request,
    batch row, model that scored it). An ensemble's members and a shadow challenger each get
    their own row; replays after an outage never duplicate."""
    return [
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("row_index", sa.Integer, primary_key=True),  # position in a batch request
        sa.Column("signal_name", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), primary_key=True),  # champion | challenger | shadow
    ]


predictions_table = sa.Table(
    "predictions",
    metadata,
    *prediction_key(),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("symbol", sa.String(64), nullable=True, index=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("features_hash", sa.String(32), nullable=False),
    sa.Column("features_ts", sa.DateTime(timezone=True), nullable=True),
    sa.Column("probability", sa.Float(53), nullable=False),
    sa.Column("signal", sa.String(8), nullable=False),  # BUY | SELL | HOLD
    sa.Column("risk_decision", sa.String(256), nullable=False),
    sa.Column("latency_ms", sa.Float(53), nullable=False),
)

# The drift monitor's checks: one row per (signal, model version, window start, window
# end), rewritten when the same window is checked again (windows of different lengths that
# end together are different rows), plus one row per feature.
drift_checks_table = sa.Table(
    "drift_checks",
    metadata,
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_bars", sa.Integer, nullable=True),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("calibrated", sa.Boolean, nullable=True),  # severity from null critical values
    sa.Column("severity", sa.String(8), nullable=False),  # none | low | medium | high
    sa.Column("share_drifted", sa.Float(53), nullable=False),
    sa.Column("prediction_psi", sa.Float(53), nullable=True),
    sa.Column("accuracy", sa.Float(53), nullable=True),
    sa.Column("holdout_accuracy", sa.Float(53), nullable=True),
    sa.Column("matured_rows", sa.Integer, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("recommendations", sa.JSON, nullable=False),
    sa.Column("alerted", sa.Boolean, nullable=False),
    sa.Column("report_path", sa.String(1024), nullable=True),
)

drift_features_table = sa.Table(
    "drift_features",
    metadata,
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("feature", sa.String(128), primary_key=True),
    sa.Column("psi", sa.Float(53), nullable=False),
    sa.Column("ks_statistic", sa.Float(53), nullable=False),
    sa.Column("ks_p_value", sa.Float(53), nullable=False),
    sa.Column("wasserstein", sa.Float(53), nullable=False),
    # the null critical values at the window's size (none: an uncalibrated profile)
    sa.Column("psi_critical", sa.Float(53), nullable=True),
    sa.Column("ks_critical", sa.Float(53), nullable=True),
    sa.Column("wasserstein_critical", sa.Float(53), nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),  # none | moderate | significant
    sa.Column("drifted", sa.Boolean, nullable=False),
)

# Realized labels of logged predictions (key: the prediction's key), from the bars, with
# the training label's definition: close H bars after the features' bar vs its close.
outcomes_table = sa.Table(
    "outcomes",
    metadata,
    *prediction_key(),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),  # prediction time
    sa.Column("features_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("probability", sa.Float(53), nullable=False),
    sa.Column("signal", sa.String(8), nullable=False),
    sa.Column("label_up", sa.Integer, nullable=False),
    sa.Column("label_return", sa.Float(53), nullable=False),
    sa.Column("matured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
)

# Failed scorings per model version (signalops.serving.failures): per minute, signal,
# version, role, error kind and sidecar worker, the worker's count in that minute (so that a
# re-sent count replaces itself). No request payload. The canary's error-rate guard divides
# these by the version's logged predictions plus its failures.
scoring_errors_table = sa.Table(
    "scoring_errors",
    metadata,
    sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),
    sa.Column("worker", sa.String(64), primary_key=True),
    sa.Column("status", sa.Integer, nullable=False),  # what the caller got (200: fallback)
    sa.Column("count", sa.Integer, nullable=False),
)

# TreeSHAP explanations of logged predictions (key: the prediction's key), from the native
# XGBoost model of the version that scored them (signalops.explanations): the largest
# contributions in log-odds, the sum of the others, the base value and the margin
# (base_value + sum(contributions) + rest = margin); or, with no numbers, why not (status).
prediction_explanations_table = sa.Table(
    "prediction_explanations",
    metadata,
    *prediction_key(),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),  # prediction time
    sa.Column("features_ts", sa.DateTime(timezone=True), nullable=True),
    # explained | no_bar_time | no_features | hash_mismatch | no_model
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("base_value", sa.Float(53), nullable=True),
    sa.Column("margin", sa.Float(53), nullable=True),
    sa.Column("rest", sa.Float(53), nullable=True),
    sa.Column("contributions", sa.JSON, nullable=True),  # [{feature, value, contribution}]
    sa.Column("explained_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_prediction_explanations_signal_ts", "signal_name", "ts"),
)

# Canary rollouts: one active row per signal at most; every transition is in ``history``.
rollouts_table = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("signal_name", sa.String(128), nullable=False, index=True),
    sa.Column("champion_version", sa.String(32), nullable=True),
    sa.Column("challenger_version", sa.String(32), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float(53), nullable=False),
    # active | promoting | promoted | watching | done | rolling_back | rolled_back |
    # superseded | manual (history: every transition, the A/B report's URI)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("history", sa.JSON, nullable=False),
)

# Every alert, by dedup key (signalops.alerts.ledger): one row per key, its latest outcome
# (sending | sent | failed | suppressed), when it was last delivered and how often it came.
alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("dedup_key", sa.String(256), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_sent", sa.DateTime(timezone=True), nullable=True),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),  # a send in flight
    sa.Column("channel", sa.String(16), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

# The signalops DAGs' finished runs, written by their DAG-level callbacks: a run of failures
# as long as the DAG's max_consecutive_failed_dag_runs means Airflow paused it.
dag_runs_table = sa.Table(
    "dag_runs",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def create_all(engine: sa.Engine) -> None:
    """Create the tables that are missing (an older drift schema is rebuilt first)."""
    _rebuild_outdated_drift_tables(engine)
    metadata.create_all(engine)


def _rebuild_outdated_drift_tables(engine: sa.Engine) -> None:
    """Drift checks are derived data (a rerun of the monitor recomputes them): tables of an
    older schema (keyed by window end only) are dropped, to be created anew."""
    inspector = sa.inspect(engine)
    if not inspector.has_table(drift_checks_table.name):
        return
    columns = {c["name"] for c in inspector.get_columns(drift_checks_table.name)}
    if set(drift_checks_table.c.keys()) <= columns:
        return
    log.warning(
        "warehouse: drift_checks/drift_features have an older schema (%s missing): "
        "dropped and created anew; rerun drift_monitor for past windows if needed",
        sorted(set(drift_checks_table.c.keys()) - columns),
    )
    for table in (drift_features_table, drift_checks_table):
        table.drop(engine, checkfirst=True)


def table_names(bind: sa.Engine | sa.Connection) -> set[str]:
    """The tables that exist in the database (created or not by ``create_all``)."""
    return set(sa.inspect(bind).get_table_names())
