"""Rows of every warehouse table the Prometheus exporter reads, written through the
warehouse module's tables: for tests/unit/test_exporter.py and
tests/integration/test_dashboard_metrics.py."""

from __future__ import annotations

from datetime import datetime, timedelta

from signalops.config import Settings
from signalops.warehouse import (
    Warehouse,
    alerts_table,
    drift_checks_table,
    outcomes_table,
    rollouts_table,
)


def check_row(signal: str, version: str, end: datetime, severity: str, share: float) -> dict:
    return {
        "signal_name": signal,
        "model_version": version,
        "window_start": end - timedelta(hours=4),
        "window_end": end,
        "window_bars": 48,
        "checked_at": end + timedelta(minutes=5),
        "rows": 240,
        "calibrated": True,
        "severity": severity,
        "share_drifted": share,
        "matured_rows": 0,
        "reasons": [],
        "recommendations": [],
        "alerted": False,
    }


def rollout_row(signal: str, rid: str, challenger: str, status: str, started: datetime) -> dict:
    return {
        "id": rid,
        "signal_name": signal,
        "champion_version": "1",
        "challenger_version": challenger,
        "step": 2,
        "weight": 0.1,
        "status": status,
        "reason": "",
        "started_at": started,
        "step_started_at": started,
        "updated_at": started,
        "history": [],
    }


def outcome_rows(signal: str, version: str, probs: list[float], labels: list[int], ts: datetime):
    return [
        {
            "request_id": f"{signal}-{version}-{i}-{ts.isoformat()}",
            "row_index": 0,
            "signal_name": signal,
            "role": "champion",
            "model_version": version,
            "symbol": "AAA",
            "ts": ts,
            "features_ts": ts,
            "probability": p,
            "signal": "BUY" if p > 0.5 else "SELL",
            "label_up": y,
            "label_return": 0.001,
            "matured_at": ts,
            "joined_at": ts,
        }
        for i, (p, y) in enumerate(zip(probs, labels, strict=True))
    ]


def alert_row(key: str, kind: str, status: str, at: datetime) -> dict:
    return {
        "dedup_key": key,
        "kind": kind,
        "severity": "warning",
        "title": key,
        "status": status,
        "occurrences": 1,
        "first_seen": at,
        "last_seen": at,
    }


def fill_warehouse(settings: Settings, now: datetime) -> None:
    """Drift checks of two signals (two windows of direction_1h), rollouts (an active one
    beside a newer finished one), outcomes inside and outside a week's live window, alerts."""
    with Warehouse(settings.warehouse_url) as wh:
        wh.create_all()
        with wh.engine.begin() as conn:
            conn.execute(
                drift_checks_table.insert(),
                [
                    check_row("direction_1h", "1", now - timedelta(hours=2), "low", 0.1),
                    check_row("direction_1h", "2", now - timedelta(hours=1), "high", 0.4),
                    check_row("other", "7", now - timedelta(hours=3), "medium", 0.2),
                ],
            )
            conn.execute(
                rollouts_table.insert(),
                [
                    rollout_row("direction_1h", "a", "2", "active", now - timedelta(days=1)),
                    # newer, but finished: the active one is the current rollout
                    rollout_row("direction_1h", "b", "3", "superseded", now - timedelta(hours=1)),
                    rollout_row("other", "c", "7", "promoted", now - timedelta(days=2)),
                ],
            )
            recent, old = now - timedelta(hours=3), now - timedelta(days=30)
            conn.execute(
                outcomes_table.insert(),
                outcome_rows("direction_1h", "1", [0.7, 0.2, 0.6, 0.4], [1, 0, 0, 0], recent)
                + outcome_rows("direction_1h", "2", [0.9, 0.1], [1, 1], recent)
                + outcome_rows("direction_1h", "9", [0.9], [1], old),  # outside the window
            )
            conn.execute(
                alerts_table.insert(),
                [
                    alert_row("k1", "drift", "sent", now),
                    alert_row("k2", "drift", "sent", now),
                    alert_row("k3", "rollout", "failed", now),
                ],
            )
