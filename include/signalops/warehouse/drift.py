"""Queries on ``drift_checks`` and ``drift_features``: the drift monitor's verdicts.

A check is keyed by (signal, model version, window start, window end): checking the same
window again replaces its row (``write_check``, an upsert) and *all* its feature rows
(``replace_features``: the window's features are deleted, then the new ones inserted, so a
feature the new check no longer has does not linger).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import drift_checks_table, drift_features_table

KEY = ("signal_name", "model_version", "window_start", "window_end")


def _same(table: sa.Table, key: Mapping[str, Any]) -> list[Any]:
    return [table.c[k] == v for k, v in key.items()]


def previous_check(conn: sa.Connection, key: Mapping[str, Any]) -> Any:
    """The stored check of the window (``alerted``, ``report_path``), None if unchecked."""
    t = drift_checks_table
    return conn.execute(sa.select(t.c.alerted, t.c.report_path).where(*_same(t, key))).first()


def alerted_severities(
    conn: sa.Connection, key: Mapping[str, Any], since: datetime, until: datetime
) -> list[str]:
    """Severities of the signal's other checks (any window length) that alerted and whose
    window ends in ``[since, until]``."""
    t = drift_checks_table
    rows = conn.execute(
        sa.select(t.c.severity).where(
            t.c.signal_name == key["signal_name"],
            t.c.alerted.is_(True),
            t.c.window_end >= since,
            t.c.window_end <= until,
            sa.not_(sa.and_(*_same(t, key))),
        )
    ).fetchall()
    return [r.severity for r in rows]


def write_check(conn: sa.Connection, row: Mapping[str, Any]) -> None:
    """Store a check whole (replacing a stored check of the same window)."""
    upsert(conn, drift_checks_table, [row], KEY)


def replace_features(
    conn: sa.Connection, key: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Range-replace: every feature row of the window is deleted, then ``rows`` inserted."""
    f = drift_features_table
    conn.execute(f.delete().where(*_same(f, key)))
    if rows:
        conn.execute(f.insert(), rows)


def mark_alerted(conn: sa.Connection, key: Mapping[str, Any]) -> int:
    """Flag the window's check as alerted; the number of checks flagged (0 or 1)."""
    t = drift_checks_table
    return int(conn.execute(sa.update(t).where(*_same(t, key)).values(alerted=True)).rowcount)


def set_report_path(conn: sa.Connection, key: Mapping[str, Any], path: str) -> None:
    t = drift_checks_table
    conn.execute(sa.update(t).where(*_same(t, key)).values(report_path=path))


def signal_names(conn: sa.Connection) -> list[str]:
    """The signals with a drift check (in the database's order)."""
    t = drift_checks_table
    return [name for (name,) in conn.execute(sa.select(t.c.signal_name).distinct())]


def newest_checks(conn: sa.Connection, signal: str, limit: int) -> list[dict[str, Any]]:
    """The signal's ``limit`` checks with the newest window end, newest first."""
    t = drift_checks_table
    return [
        dict(r)
        for r in conn.execute(
            sa.select(
                t.c.model_version,
                t.c.window_start,
                t.c.window_end,
                t.c.window_bars,
                t.c.checked_at,
                t.c.rows,
                t.c.severity,
                t.c.share_drifted,
                t.c.prediction_psi,
                t.c.accuracy,
                t.c.holdout_accuracy,
                t.c.reasons,
                t.c.report_path,
            )
            .where(t.c.signal_name == signal)
            .order_by(t.c.window_end.desc())
            .limit(limit)
        ).mappings()
    ]


def drifted_features_since(
    conn: sa.Connection, signal: str, oldest_end: Any
) -> dict[tuple[Any, Any, Any], list[str]]:
    """The drifted features' names per (model version, window start, window end) of the
    signal's windows ending at ``oldest_end`` or later."""
    f = drift_features_table
    drifted: dict[tuple[Any, Any, Any], list[str]] = {}
    for r in conn.execute(
        sa.select(f.c.model_version, f.c.window_start, f.c.window_end, f.c.feature).where(
            f.c.signal_name == signal, f.c.drifted.is_(True), f.c.window_end >= oldest_end
        )
    ):
        drifted.setdefault((r[0], r[1], r[2]), []).append(str(r[3]))
    return drifted


def window_features(
    conn: sa.Connection, signal: str, model_version: Any, window_start: Any, window_end: Any
) -> list[dict[str, Any]]:
    """Every feature of one checked window, drifted first, then by PSI descending."""
    f = drift_features_table
    return [
        dict(r)
        for r in conn.execute(
            sa.select(
                f.c.feature,
                f.c.psi,
                f.c.ks_statistic,
                f.c.wasserstein,
                f.c.psi_critical,
                f.c.severity,
                f.c.drifted,
            )
            .where(
                f.c.signal_name == signal,
                f.c.model_version == model_version,
                f.c.window_start == window_start,
                f.c.window_end == window_end,
            )
            .order_by(f.c.drifted.desc(), f.c.psi.desc())
        ).mappings()
    ]


def newest_per_signal(conn: sa.Connection) -> list[Any]:
    """Per signal, the checks of its newest window end (ordered by ``checked_at``: when
    windows of different lengths tie, the last is the newest check)."""
    t = drift_checks_table
    newest_end = (
        sa.select(t.c.signal_name, sa.func.max(t.c.window_end).label("window_end"))
        .group_by(t.c.signal_name)
        .subquery()
    )
    return list(
        conn.execute(
            sa.select(
                t.c.signal_name,
                t.c.model_version,
                t.c.severity,
                t.c.share_drifted,
                t.c.window_end,
                t.c.checked_at,
            )
            .join(
                newest_end,
                sa.and_(
                    t.c.signal_name == newest_end.c.signal_name,
                    t.c.window_end == newest_end.c.window_end,
                ),
            )
            .order_by(t.c.checked_at)
        ).all()
    )


def latest_checks(conn: sa.Connection, limit: int = 5) -> list[Any]:
    """The ``limit`` checks with the newest window end, any signal (``signalops status``)."""
    t = drift_checks_table
    query = sa.select(
        t.c.signal_name,
        t.c.model_version,
        t.c.window_end,
        t.c.severity,
        t.c.share_drifted,
        t.c.alerted,
        t.c.report_path,
    ).order_by(t.c.window_end.desc())
    return list(conn.execute(query.limit(limit)).fetchall())
