"""A drift check's rows in the warehouse, and whether it alerts.

``persist`` writes a check (``drift_checks`` + ``drift_features``, keyed by signal, model
version and the window's start and end: a check of the same window replaces the previous
one) and decides whether it alerts (the de-duplication: once per drift, not once per hour
or per window length). ``mark_alerted`` records a delivered alert; ``set_report_path`` the
check's Evidently report. The Slack message: ``signalops.drift.alert``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from signalops.config import Settings
from signalops.drift.check import CRITICAL_COLUMNS, SEVERITIES, DriftCheck


def check_key(check: DriftCheck | Mapping[str, Any]) -> dict[str, Any]:
    """The warehouse key of a check (or of its ``as_dict()``): windows of different lengths
    never share a row."""
    values = check if isinstance(check, Mapping) else vars(check)
    return {
        "signal_name": values["signal"],
        "model_version": values["model_version"],
        "window_start": pd.Timestamp(values["window_start"]).to_pydatetime(),
        "window_end": pd.Timestamp(values["window_end"]).to_pydatetime(),
    }


def persist(settings: Settings, check: DriftCheck, report_path: str | None = None) -> bool:
    """Write the check (replacing a previous check of the same window); return whether it
    should alert: medium or high, and no alert of at least this severity for this signal
    (any window length) ending within ``drift.realert_hours`` before this window's end (an
    ongoing drift alerts once, not hourly, and once for all the window lengths checked).
    A window counts as alerted only once the alert was delivered (``mark_alerted``): if the
    report, MLflow or Slack fails, the next check of the drift alerts again."""
    from signalops.warehouse import Warehouse
    from signalops.warehouse import drift as drift_rows

    cfg = settings.drift
    key = check_key(check)
    end = key["window_end"]
    rank = SEVERITIES.index(check.severity)
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        with warehouse.begin() as conn:
            previous = drift_rows.previous_check(conn, key)
            recent = drift_rows.alerted_severities(
                conn, key, end - timedelta(hours=cfg.realert_hours), end
            )
            already = previous is not None and bool(previous.alerted)
            covered = any(SEVERITIES.index(severity) >= rank for severity in recent)
            alert = rank >= SEVERITIES.index("medium") and not covered and not already
            drift_rows.write_check(
                conn,
                {
                    **key,
                    "window_bars": check.window_bars or None,
                    "checked_at": datetime.now(UTC),
                    "rows": check.rows,
                    "calibrated": check.calibrated,
                    "severity": check.severity,
                    "share_drifted": check.share_drifted,
                    "prediction_psi": check.prediction_psi,
                    "accuracy": check.accuracy,
                    "holdout_accuracy": check.holdout_accuracy,
                    "matured_rows": check.matured_rows,
                    "reasons": check.reasons,
                    "recommendations": check.recommendations,
                    "alerted": already,
                    "report_path": report_path or (previous.report_path if previous else None),
                },
            )
            drift_rows.replace_features(
                conn,
                key,
                [
                    {
                        **key,
                        "feature": f["feature"],
                        "psi": f["psi"],
                        "ks_statistic": f["ks_statistic"],
                        "ks_p_value": f["ks_p_value"],
                        "wasserstein": f["wasserstein"],
                        **{c: f.get(c) for c in CRITICAL_COLUMNS.values()},
                        "severity": f["severity"],
                        "drifted": bool(f["drifted"]),
                    }
                    for f in check.features
                ],
            )
    return alert


def mark_alerted(settings: Settings, summary: Mapping[str, Any]) -> None:
    """The alert of a check (``DriftCheck.as_dict()``, as the DAG passes it on) was
    delivered: later windows within ``realert_hours`` are covered by it."""
    from signalops.warehouse import Warehouse
    from signalops.warehouse import drift as drift_rows

    key = check_key(summary)
    with Warehouse(settings.warehouse_url) as warehouse, warehouse.begin() as conn:
        updated = drift_rows.mark_alerted(conn, key)
    if updated != 1:
        raise RuntimeError(f"no drift check to mark alerted for {key}")


def set_report_path(settings: Settings, check: DriftCheck, path: str) -> None:
    from signalops.warehouse import Warehouse
    from signalops.warehouse import drift as drift_rows

    with Warehouse(settings.warehouse_url) as warehouse, warehouse.begin() as conn:
        drift_rows.set_report_path(conn, check_key(check), path)
