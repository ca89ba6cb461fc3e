"""Queries on ``alerts`` (the alert ledger, ``signalops.alerts.ledger``) and ``dag_runs``
(finished DAG runs, ``signalops.alerts.dag_runs``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import alerts_table, dag_runs_table

# -- alerts -------------------------------------------------------------------------------


def find(conn: sa.Connection, key: str) -> Any:
    """The ledger row of a dedup key, None when it was never seen."""
    t = alerts_table
    return conn.execute(sa.select(t).where(t.c.dedup_key == key)).first()


def insert_claimed(
    conn: sa.Connection, key: str, kind: str, severity: str, title: str, now: datetime
) -> None:
    """The first occurrence of a key, claimed for sending by this caller. Raises
    ``IntegrityError`` when another process inserted the key first."""
    t = alerts_table
    conn.execute(
        t.insert().values(
            dedup_key=key,
            kind=kind,
            severity=severity,
            title=title,
            status="sending",
            occurrences=1,
            first_seen=now,
            last_seen=now,
            claimed_at=now,
        )
    )


def swap_occurrence(conn: sa.Connection, key: str, occurrences: int, **values: Any) -> int:
    """Compare-and-swap on the occurrence count: set ``values`` (and one more occurrence)
    when the row still has ``occurrences``; the number of rows changed (0 or 1)."""
    t = alerts_table
    return int(
        conn.execute(
            sa.update(t)
            .where(t.c.dedup_key == key, t.c.occurrences == occurrences)
            .values(occurrences=occurrences + 1, **values)
        ).rowcount
    )


def update(conn: sa.Connection, key: str, **values: Any) -> None:
    """Set ``values`` on the key's row (none: nothing happens)."""
    t = alerts_table
    conn.execute(sa.update(t).where(t.c.dedup_key == key).values(**values))


def sent_since(conn: sa.Connection, channel: str, since: datetime) -> int:
    """How many alerts were last sent on ``channel`` at ``since`` or later."""
    t = alerts_table
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(t)
            .where(t.c.channel == channel, t.c.last_sent >= since)
        ).scalar_one()
    )


def newest(conn: sa.Connection, signal: str | None, limit: int) -> list[dict[str, Any]]:
    """The ``limit`` alerts seen last (of one signal: its name in the dedup key or the
    title), newest first."""
    t = alerts_table
    query = sa.select(
        t.c.kind,
        t.c.severity,
        t.c.title,
        t.c.status,
        t.c.occurrences,
        t.c.first_seen,
        t.c.last_seen,
        t.c.last_sent,
        t.c.channel,
        t.c.error,
    )
    if signal:
        pattern = f"%{signal}%"
        query = query.where(sa.or_(t.c.dedup_key.like(pattern), t.c.title.like(pattern)))
    return [
        dict(r) for r in conn.execute(query.order_by(t.c.last_seen.desc()).limit(limit)).mappings()
    ]


def count_by_kind_status(conn: sa.Connection) -> list[Any]:
    """(kind, status, count) of the ledger's rows, ordered by kind and status."""
    t = alerts_table
    return list(
        conn.execute(
            sa.select(t.c.kind, t.c.status, sa.func.count())
            .group_by(t.c.kind, t.c.status)
            .order_by(t.c.kind, t.c.status)
        )
    )


# -- dag_runs -----------------------------------------------------------------------------


def record_run(
    conn: sa.Connection, dag_id: str, run_id: str, state: str, finished_at: datetime
) -> None:
    """Store one finished run; the same run stored again updates its state only."""
    row = {"dag_id": dag_id, "run_id": run_id, "state": state, "finished_at": finished_at}
    upsert(conn, dag_runs_table, [row], ["dag_id", "run_id"], ["state"])


def newest_run_states(conn: sa.Connection, dag_id: str, limit: int) -> list[str]:
    """The states of the DAG's ``limit`` runs that finished last, newest first."""
    t = dag_runs_table
    return list(
        conn.execute(
            sa.select(t.c.state)
            .where(t.c.dag_id == dag_id)
            .order_by(t.c.finished_at.desc(), t.c.run_id.desc())
            .limit(limit)
        ).scalars()
    )
