"""Queries on ``outcomes``: realized labels of logged predictions (``signalops.rollout.outcomes``).

A prediction is labeled once: writing its outcome again is a no-op (insert-or-ignore on the
prediction's key), so joining runs are idempotent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import outcomes_table

KEY = ("request_id", "row_index", "signal_name", "role")


def insert_new(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store the outcomes of predictions not labeled yet (those labeled already are kept)."""
    upsert(conn, outcomes_table, rows, KEY, update_columns=())


def labeled(
    conn: sa.Connection,
    signal: str,
    version: str,
    roles: tuple[str, ...],
    since: datetime,
    until: datetime,
) -> list[Any]:
    """(probability, signal, label_up, label_return) of the version's outcomes in ``roles``
    whose prediction time is in ``[since, until)``."""
    o = outcomes_table
    return list(
        conn.execute(
            sa.select(o.c.probability, o.c.signal, o.c.label_up, o.c.label_return).where(
                o.c.signal_name == signal,
                o.c.model_version == version,
                o.c.role.in_(roles),
                o.c.ts >= since,
                o.c.ts < until,
            )
        ).fetchall()
    )


def since(conn: sa.Connection, start: datetime) -> list[Any]:
    """(signal_name, model_version, probability, label_up) of every outcome whose
    prediction time is ``start`` or later."""
    o = outcomes_table
    return list(
        conn.execute(
            sa.select(o.c.signal_name, o.c.model_version, o.c.probability, o.c.label_up).where(
                o.c.ts >= start
            )
        ).all()
    )
