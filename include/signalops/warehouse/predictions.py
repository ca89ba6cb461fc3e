"""Read queries on ``predictions`` for the modules downstream of serving (outcomes, canary,
cockpit, CLI). The sidecar's prediction log (``signalops.serving.predlog``) writes the table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa

from signalops.warehouse.schema import outcomes_table, predictions_table

KEY = ("request_id", "row_index", "signal_name", "role")
UNLABELED_COLUMNS = [*KEY, "model_version", "symbol", "ts", "features_ts", "probability", "signal"]


def unlabeled(conn: sa.Connection, limit: int) -> pd.DataFrame:
    """Up to ``limit`` predictions with a symbol and a features' bar time and no outcome yet
    (``UNLABELED_COLUMNS``; timestamps as the database returns them)."""
    p, o = predictions_table, outcomes_table
    query = (
        sa.select(
            *(p.c[k] for k in KEY),
            p.c.model_version,
            p.c.symbol,
            p.c.ts,
            p.c.features_ts,
            p.c.probability,
            p.c.signal,
        )
        .select_from(p.outerjoin(o, sa.and_(*(p.c[k] == o.c[k] for k in KEY))))
        .where(
            o.c.request_id.is_(None),
            p.c.features_ts.is_not(None),
            p.c.symbol.is_not(None),
        )
        .limit(limit)
    )
    return pd.DataFrame(conn.execute(query).fetchall(), columns=UNLABELED_COLUMNS)


def scores(
    conn: sa.Connection,
    signal: str,
    version: str,
    roles: tuple[str, ...],
    since: datetime,
    until: datetime,
) -> list[Any]:
    """(probability, latency_ms) of the version's predictions in ``roles`` in
    ``[since, until)``."""
    p = predictions_table
    return list(
        conn.execute(
            sa.select(p.c.probability, p.c.latency_ms).where(
                p.c.signal_name == signal,
                p.c.model_version == version,
                p.c.role.in_(roles),
                p.c.ts >= since,
                p.c.ts < until,
            )
        ).fetchall()
    )


def shadow_pairs(
    conn: sa.Connection, signal: str, shadow_version: str, since: datetime, until: datetime
) -> list[Any]:
    """(champion probability, shadow probability) of the rows both scored in
    ``[since, until)`` (the champion's ts), the shadow being ``shadow_version``."""
    p = predictions_table
    a, b = p.alias("a"), p.alias("b")
    query = (
        sa.select(a.c.probability, b.c.probability)
        .select_from(
            a.join(
                b,
                sa.and_(
                    a.c.request_id == b.c.request_id,
                    a.c.row_index == b.c.row_index,
                    a.c.signal_name == b.c.signal_name,
                ),
            )
        )
        .where(
            a.c.signal_name == signal,
            a.c.role == "champion",
            b.c.role == "shadow",
            b.c.model_version == shadow_version,
            a.c.ts >= since,
            a.c.ts < until,
        )
    )
    return list(conn.execute(query).fetchall())


def versions_since(conn: sa.Connection, signal: str, since: datetime) -> list[str]:
    """The model versions that served the signal since ``since``."""
    p = predictions_table
    return [
        str(v)
        for (v,) in conn.execute(
            sa.select(p.c.model_version)
            .where(p.c.signal_name == signal, p.c.ts >= since)
            .distinct()
        )
    ]


def count_by_role(conn: sa.Connection) -> dict[str, int]:
    """Rows of the prediction log, by role."""
    role = predictions_table.c.role
    rows = conn.execute(sa.select(role, sa.func.count()).group_by(role)).fetchall()
    return {str(r): int(n) for r, n in rows}
