"""Queries on ``prediction_explanations``: TreeSHAP explanations of logged predictions
(``signalops.explanations`` writes them; the CLI and the Signals page read them).

A prediction has at most one row, keyed like the prediction; writing it again replaces it
(same input, same row), so explaining runs are idempotent. The predictions still to explain
are those without a row: every prediction a run looks at gets one, explained or with the
reason it could not be, so the next run starts where this one stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import prediction_explanations_table, predictions_table

KEY = ("request_id", "row_index", "signal_name", "role")
# Values of ``status``: explained, or why a prediction has no numbers.
EXPLAINED = "explained"
NO_BAR_TIME = "no_bar_time"  # the prediction names no symbol or no features' bar time
NO_FEATURES = "no_features"  # the offline store has no row at (symbol, features_ts)
HASH_MISMATCH = "hash_mismatch"  # the stored row is not what was scored
NO_MODEL = "no_model"  # the version or its native model is gone from the registry
STATUSES = (EXPLAINED, NO_BAR_TIME, NO_FEATURES, HASH_MISMATCH, NO_MODEL)
UNEXPLAINED_COLUMNS = [
    *KEY,
    "model_version",
    "symbol",
    "ts",
    "features_ts",
    "features_hash",
    "probability",
]


def unexplained(conn: sa.Connection, since: datetime, limit: int) -> pd.DataFrame:
    """Up to ``limit`` predictions made at ``since`` or later that have no explanation row,
    oldest first (``UNEXPLAINED_COLUMNS``; timestamps as the database returns them)."""
    p, e = predictions_table, prediction_explanations_table
    query = (
        sa.select(*(p.c[c] for c in UNEXPLAINED_COLUMNS))
        .select_from(p.outerjoin(e, sa.and_(*(p.c[k] == e.c[k] for k in KEY))))
        .where(e.c.request_id.is_(None), p.c.ts >= since)
        .order_by(p.c.ts, *(p.c[k] for k in KEY))
        .limit(limit)
    )
    return pd.DataFrame(conn.execute(query).fetchall(), columns=UNEXPLAINED_COLUMNS)


def store(conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Write explanation rows (a row already there is replaced)."""
    return upsert(conn, prediction_explanations_table, rows, KEY)


def of_request(conn: sa.Connection, request_id: str) -> list[dict[str, Any]]:
    """Every explanation row of one request (all its rows and roles), in row order."""
    e = prediction_explanations_table
    query = (
        sa.select(e)
        .where(e.c.request_id == request_id)
        .order_by(e.c.row_index, e.c.signal_name, e.c.role)
    )
    return [dict(r._mapping) for r in conn.execute(query)]


def newest(
    conn: sa.Connection,
    signal: str,
    limit: int,
    role: str | None = None,
    version: str | None = None,
    explained_only: bool = True,
) -> list[dict[str, Any]]:
    """The signal's ``limit`` newest explanation rows (by prediction time), of one role
    and one model version when given; without the skipped ones unless asked."""
    e = prediction_explanations_table
    query = sa.select(e).where(e.c.signal_name == signal)
    if role is not None:
        query = query.where(e.c.role == role)
    if version is not None:
        query = query.where(e.c.model_version == version)
    if explained_only:
        query = query.where(e.c.status == EXPLAINED)
    query = query.order_by(e.c.ts.desc(), e.c.request_id, e.c.row_index).limit(limit)
    return [dict(r._mapping) for r in conn.execute(query)]


def count_by_status(conn: sa.Connection) -> dict[str, int]:
    """Explanation rows, by status (``explained`` or why not)."""
    status = prediction_explanations_table.c.status
    rows = conn.execute(sa.select(status, sa.func.count()).group_by(status)).fetchall()
    return {str(s): int(n) for s, n in rows}
