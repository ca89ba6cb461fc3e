"""Queries on ``rollouts``: the canary's rows, one per rollout (``signalops.rollout.canary``).

At most one row per signal is active (``ACTIVE`` statuses); every transition is in the
row's ``history``. A row is written whole, replacing the stored one with its id.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import rollouts_table

# "watching": a promoted challenger judged as champion (rollout.watch_hours); it ends
# "done" or, rolled back, "rolled_back".
ACTIVE = ("active", "promoting", "rolling_back", "watching")


def active(conn: sa.Connection, signal: str) -> dict[str, Any] | None:
    """The signal's active rollout (status in ``ACTIVE``), None when there is none."""
    t = rollouts_table
    row = (
        conn.execute(sa.select(t).where(t.c.signal_name == signal, t.c.status.in_(ACTIVE)))
        .mappings()
        .first()
    )
    return dict(row) if row else None


def for_signal(conn: sa.Connection, signal: str) -> list[dict[str, Any]]:
    """Every rollout of the signal, oldest first."""
    t = rollouts_table
    found = conn.execute(
        sa.select(t).where(t.c.signal_name == signal).order_by(t.c.started_at)
    ).mappings()
    return [dict(r) for r in found]


def newest(conn: sa.Connection, signal: str, limit: int) -> list[dict[str, Any]]:
    """The signal's newest ``limit`` rollouts, newest first."""
    t = rollouts_table
    return [
        dict(r)
        for r in conn.execute(
            sa.select(t)
            .where(t.c.signal_name == signal)
            .order_by(t.c.started_at.desc())
            .limit(limit)
        ).mappings()
    ]


def write(conn: sa.Connection, row: dict[str, Any]) -> None:
    """Store the rollout row whole (a new one, or replacing the stored one with its id)."""
    upsert(conn, rollouts_table, [row], ["id"])


def signal_names(conn: sa.Connection) -> list[str]:
    """The signals with a rollout row (in the database's order)."""
    t = rollouts_table
    return [name for (name,) in conn.execute(sa.select(t.c.signal_name).distinct())]


def current_per_signal(conn: sa.Connection) -> dict[str, Any]:
    """Each signal's current rollout row (signal, challenger, champion, step, weight,
    status): the active one, else the newest started."""
    t = rollouts_table
    columns = (
        t.c.signal_name,
        t.c.challenger_version,
        t.c.champion_version,
        t.c.step,
        t.c.weight,
        t.c.status,
    )
    newest_started = (
        sa.select(t.c.signal_name, sa.func.max(t.c.started_at).label("started_at"))
        .group_by(t.c.signal_name)
        .subquery()
    )
    current = {
        r.signal_name: r
        for r in conn.execute(
            sa.select(*columns).join(
                newest_started,
                sa.and_(
                    t.c.signal_name == newest_started.c.signal_name,
                    t.c.started_at == newest_started.c.started_at,
                ),
            )
        )
    }
    for r in conn.execute(sa.select(*columns).where(t.c.status.in_(ACTIVE))):
        current[r.signal_name] = r
    return current


def latest_updated(conn: sa.Connection, limit: int = 5) -> list[Any]:
    """The ``limit`` most recently updated rollouts of any signal (for ``signalops status``)."""
    t = rollouts_table
    query = sa.select(
        t.c.signal_name,
        t.c.champion_version,
        t.c.challenger_version,
        t.c.status,
        t.c.weight,
        t.c.reason,
        t.c.updated_at,
    ).order_by(t.c.updated_at.desc())
    return list(conn.execute(query.limit(limit)).fetchall())
