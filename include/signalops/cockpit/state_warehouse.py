"""The Signals page's warehouse reads: rollouts, drift checks, live metrics, alerts and
the champion's newest prediction explanations.

One function per section of the page, each a few bounded queries on indexed columns
(``signalops.warehouse``'s row helpers). A table that does not exist yet reads as an empty
section; a warehouse whose SQLite file does not exist is never created (``open_warehouse``
returns None). The warehouse module (pandas, numpy) is imported when a page is built, not
when the plugin is loaded. Timestamps come back as ISO-8601 strings in UTC (``iso``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from signalops.config import RolloutSettings, Settings, as_utc

if TYPE_CHECKING:
    from signalops.warehouse import Warehouse

LIVE_WINDOW = timedelta(days=7)  # live metrics: predictions and outcomes of the last week
DRIFT_POINTS = 200  # newest drift checks on the timeline
ROLLOUTS_SHOWN = 5
ALERTS_SHOWN = 20
EXPLANATIONS_SHOWN = 10  # the champion's newest explained predictions


def open_warehouse(settings: Settings) -> Warehouse | None:
    """The warehouse, or None when its SQLite file does not exist yet (never created here)."""
    from signalops.warehouse import Warehouse

    url = sa.make_url(settings.warehouse_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    return Warehouse(settings.warehouse_url)


def _tables(warehouse: Warehouse) -> set[str]:
    return warehouse.tables()


def iso(value: Any) -> str | None:
    """A timestamp (datetime or ISO string) as an ISO-8601 string in UTC; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).isoformat()


def signal_names(settings: Settings, warehouse: Warehouse | None) -> list[str]:
    """The configured signals, then any other signal the warehouse has rows for."""
    from signalops.warehouse import drift as drift_rows
    from signalops.warehouse import drift_checks_table, rollouts_table
    from signalops.warehouse import rollouts as rollout_rows

    names = list(dict.fromkeys([settings.signal_name, *settings.serving.signals]))
    if warehouse is None:
        return names
    tables = _tables(warehouse)
    found: list[str] = []
    with warehouse.connect() as conn:
        if rollouts_table.name in tables:
            found += rollout_rows.signal_names(conn)
        if drift_checks_table.name in tables:
            found += drift_rows.signal_names(conn)
    for name in found:
        if name not in names:
            names.append(str(name))
    return names


def read_rollouts(
    warehouse: Warehouse, signal: str, cfg: RolloutSettings
) -> tuple[dict[str, Any] | None, list[Any]]:
    """(the active rollout, else the newest, with its last judged guard values and their
    limits; the newest ``ROLLOUTS_SHOWN`` rollouts)."""
    from signalops.warehouse import rollouts as rollout_rows
    from signalops.warehouse import rollouts_table

    if rollouts_table.name not in _tables(warehouse):
        return None, []
    with warehouse.connect() as conn:
        rows = rollout_rows.newest(conn, signal, ROLLOUTS_SHOWN)
        active = rollout_rows.active(conn, signal)
    for row in rows:
        for key in ("started_at", "step_started_at", "updated_at"):
            row[key] = iso(row[key])
    current = dict(active) if active is not None else (rows[0] if rows else None)
    if current is not None:
        for key in ("started_at", "step_started_at", "updated_at"):
            current[key] = iso(current[key])
        history = current.get("history") or []
        current["history"] = history if isinstance(history, list) else json.loads(history)
        current["guards"] = next(
            (h["numbers"] for h in reversed(current["history"]) if h.get("numbers")), {}
        )
        current["guard_checks"] = guard_checks(current["guards"], cfg)
    summary = [{k: v for k, v in r.items() if k != "history"} for r in rows]
    return current, summary


def guard_checks(numbers: dict[str, Any], cfg: RolloutSettings) -> list[dict[str, Any]]:
    """The canary's guards as it last judged them (``canary.judge``'s numbers): each value
    next to its limit, ``ok``, ``breach``, ``waiting`` (not enough yet) or ``not judged``."""
    champion, challenger = numbers.get("champion") or {}, numbers.get("challenger") or {}
    ch_p95, champ_p95 = challenger.get("latency_p95_ms"), champion.get("latency_p95_ms")
    latency_limit = (
        champ_p95 * cfg.max_latency_ratio + cfg.latency_slack_ms if champ_p95 is not None else None
    )
    ch_out, champ_out = challenger.get("outcomes"), champion.get("outcomes")
    fewer = min(ch_out, champ_out) if ch_out is not None and champ_out is not None else None
    rows: list[tuple[str, Any, Any, str, bool]] = [
        # (guard, value, limit, comparison, short of it = waiting rather than a breach)
        ("challenger predictions at the step", challenger.get("predictions"),
         cfg.min_predictions, ">=", True),
        ("error rate over the champion's", numbers.get("error_rate_excess"),
         cfg.max_error_rate_excess, "<=", False),
        ("p(error rate worse)", numbers.get("p_error_rate_worse"), cfg.significance, ">=",
         False),
        ("challenger latency p95 (ms)", ch_p95, latency_limit, "<=", False),
        ("score PSI vs champion", numbers.get("score_psi"), cfg.max_score_psi, "<=", False),
        ("signal agreement (shadow step)", numbers.get("agreement"), cfg.min_agreement, ">=",
         False),
        ("matured outcomes (fewer of the two)", fewer, cfg.min_outcomes, ">=", True),
        ("p(live accuracy worse)", numbers.get("p_accuracy_worse"), cfg.significance, ">=",
         False),
        ("p(live log loss worse)", numbers.get("p_log_loss_worse"), cfg.significance, ">=",
         False),
        ("minutes at the step", numbers.get("step_minutes"), cfg.min_step_minutes, ">=", True),
    ]  # fmt: skip
    out = []
    for guard, value, limit, op, waits in rows:
        if value is None or limit is None:
            status = "not judged"
        elif (value >= limit) if op == ">=" else (value <= limit):
            status = "ok"
        else:
            status = "waiting" if waits else "breach"
        out.append(
            {
                "guard": guard,
                "value": value,
                "limit": f"{op} {limit:g}" if limit is not None else None,
                "status": status,
            }
        )
    return out


def read_drift(
    warehouse: Warehouse, signal: str, points: int = DRIFT_POINTS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the newest ``points`` checks, oldest first, each with its drifted features' names;
    every feature of the newest check, most drifted first)."""
    from signalops.warehouse import drift as drift_rows
    from signalops.warehouse import drift_checks_table, drift_features_table

    tables = _tables(warehouse)
    if drift_checks_table.name not in tables:
        return [], []
    with warehouse.connect() as conn:
        rows = drift_rows.newest_checks(conn, signal, points)
        drifted: dict[tuple[str, Any, Any], list[str]] = {}
        latest: list[dict[str, Any]] = []
        if rows and drift_features_table.name in tables:
            drifted = drift_rows.drifted_features_since(conn, signal, rows[-1]["window_end"])
            newest = rows[0]
            latest = drift_rows.window_features(
                conn,
                signal,
                newest["model_version"],
                newest["window_start"],
                newest["window_end"],
            )
    for row in rows:
        key = (row["model_version"], row["window_start"], row["window_end"])
        row["drifted_features"] = sorted(drifted.get(key, []))
        for name in ("window_start", "window_end", "checked_at"):
            row[name] = iso(row[name])
    rows.reverse()
    return rows, latest


def read_alerts(warehouse: Warehouse, signal: str | None, limit: int = ALERTS_SHOWN) -> list[Any]:
    """The newest alerts (of one signal: its name in the dedup key or the title)."""
    from signalops.warehouse import alerts as alert_rows
    from signalops.warehouse import alerts_table

    if alerts_table.name not in _tables(warehouse):
        return []
    with warehouse.connect() as conn:
        rows = alert_rows.newest(conn, signal, limit)
    for row in rows:
        for name in ("first_seen", "last_seen", "last_sent"):
            row[name] = iso(row[name])
    return rows


def read_live(
    settings: Settings,
    warehouse: Warehouse,
    signal: str,
    versions: list[str],
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Live metrics of each version that served in the last ``LIVE_WINDOW`` (and of the
    aliased ``versions``), from ``rollout.outcomes.live_metrics``: the canary's own figures."""
    from signalops.rollout.outcomes import live_metrics
    from signalops.warehouse import outcomes_table, predictions_table
    from signalops.warehouse import predictions as prediction_rows

    tables = _tables(warehouse)
    if predictions_table.name not in tables or outcomes_table.name not in tables:
        return []
    now = now or datetime.now(UTC)
    since = now - LIVE_WINDOW
    with warehouse.connect() as conn:
        served = prediction_rows.versions_since(conn, signal, since)
    out = []
    for version in sorted(set(versions) | set(served), key=_version_key, reverse=True):
        figures = live_metrics(
            settings, warehouse, signal, version, ("champion", "challenger", "shadow"), since, now
        ).as_dict()
        if figures["predictions"] or figures["outcomes"]:
            out.append(figures)
    return out


def read_explanations(
    warehouse: Warehouse, signal: str, version: str | None, limit: int = EXPLANATIONS_SHOWN
) -> list[dict[str, Any]]:
    """The newest explained predictions the champion answered (of ``version`` when known),
    newest first, each with P(up) of its margin and its top contributions."""
    from signalops.explanations import sigmoid
    from signalops.warehouse import explanations as explanation_rows
    from signalops.warehouse import prediction_explanations_table

    if prediction_explanations_table.name not in _tables(warehouse):
        return []
    with warehouse.connect() as conn:
        rows = explanation_rows.newest(conn, signal, limit, role="champion", version=version)
    out = []
    for row in rows:
        margin = float(row["margin"])
        out.append(
            {
                "request_id": row["request_id"],
                "row_index": row["row_index"],
                "model_version": row["model_version"],
                "symbol": row["symbol"],
                "ts": iso(row["ts"]),
                "features_ts": iso(row["features_ts"]),
                "probability": sigmoid(margin),
                "margin": margin,
                "base_value": row["base_value"],
                "rest": row["rest"],
                "contributions": list(row["contributions"] or []),
            }
        )
    return out


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)
