"""Queries on ``scoring_errors``: failed scorings per model version, minute and worker,
written by the sidecar (``signalops.serving.failures``) and read by the canary's
error-rate guard."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import scoring_errors_table

KEY = ("minute", "signal_name", "model_version", "role", "kind", "worker")


def write(target: sa.Engine | sa.Connection, rows: Iterable[Mapping[str, Any]]) -> int:
    """Each worker's count for a minute replaces the one it sent before (idempotent)."""
    return upsert(target, scoring_errors_table, rows, KEY)


def totals(
    conn: sa.Connection, signal: str, since: datetime, until: datetime | None = None
) -> dict[str, int]:
    """model version -> failed scorings of ``signal`` in the minutes from ``since``."""
    t = scoring_errors_table
    query = (
        sa.select(t.c.model_version, sa.func.sum(t.c.count))
        .where(t.c.signal_name == signal, t.c.minute >= since.replace(second=0, microsecond=0))
        .group_by(t.c.model_version)
    )
    if until is not None:
        query = query.where(t.c.minute <= until)
    return {str(version): int(n) for version, n in conn.execute(query)}


def by_kind(conn: sa.Connection, signal: str, version: str, since: datetime) -> dict[str, int]:
    """error kind -> failed scorings of one version since ``since``."""
    t = scoring_errors_table
    query = (
        sa.select(t.c.kind, sa.func.sum(t.c.count))
        .where(
            t.c.signal_name == signal,
            t.c.model_version == version,
            t.c.minute >= since.replace(second=0, microsecond=0),
        )
        .group_by(t.c.kind)
    )
    return {str(kind): int(n) for kind, n in conn.execute(query)}
