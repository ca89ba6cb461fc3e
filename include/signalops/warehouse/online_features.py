"""Queries on ``online_features``: the latest feature vector per (feature set, symbol), the
online store's embedded backend (``signalops.features.online_store.SqlOnlineStore``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from signalops.warehouse.core import upsert
from signalops.warehouse.schema import online_features_table

KEY = ("feature_set_version", "symbol")


def write(conn: sa.Connection, records: Sequence[Mapping[str, Any]]) -> int:
    """Store each vector unless the stored one is of a newer bar time; how many were
    written (one statement per vector, for an exact count)."""
    return sum(
        upsert(
            conn,
            online_features_table,
            [record],
            KEY,
            ("ts", "features", "updated_at"),
            keep_newer="ts",
        )
        for record in records
    )


def read(conn: sa.Connection, version: str, symbols: list[str]) -> list[Any]:
    """(symbol, ts, features) of the symbols' stored vectors of the feature set."""
    t = online_features_table
    query = sa.select(t.c.symbol, t.c.ts, t.c.features).where(
        t.c.feature_set_version == version, t.c.symbol.in_(symbols)
    )
    return list(conn.execute(query).all())
