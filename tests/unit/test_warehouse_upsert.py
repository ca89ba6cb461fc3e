"""The warehouse's one upsert (INSERT .. ON CONFLICT) on SQLite and on PostgreSQL: the same
rows written twice are one copy, a changed value overwrites, and the variants every writer
uses (some columns, insert-or-ignore, keep the newer row) behave alike on both."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from signalops.warehouse import Warehouse, upsert

probe_metadata = sa.MetaData()
probe = sa.Table(
    "upsert_probe",
    probe_metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("value", sa.Float(53), nullable=False),
    sa.Column("note", sa.String(32), nullable=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
KEY = ("name", "n")


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    url = (
        f"sqlite:///{tmp_path / 'wh.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    wh = Warehouse(url)
    probe_metadata.drop_all(wh.engine)
    probe_metadata.create_all(wh.engine)
    yield wh
    probe_metadata.drop_all(wh.engine)
    wh.dispose()


def _rows(n: int, value: float = 1.0, note: str | None = "a") -> list[dict[str, Any]]:
    return [
        {"name": "x", "n": i, "value": value + i, "note": note, "ts": T0 + timedelta(hours=i)}
        for i in range(n)
    ]


def _stored(wh: Warehouse) -> list[tuple[Any, ...]]:
    with wh.connect() as conn:
        rows = conn.execute(
            sa.select(probe.c.name, probe.c.n, probe.c.value, probe.c.note).order_by(probe.c.n)
        ).all()
    return [tuple(r) for r in rows]


def test_the_same_rows_twice_are_one_copy(warehouse: Warehouse) -> None:
    assert upsert(warehouse.engine, probe, _rows(3), KEY) == 3
    upsert(warehouse.engine, probe, _rows(3), KEY)
    assert _stored(warehouse) == [("x", 0, 1.0, "a"), ("x", 1, 2.0, "a"), ("x", 2, 3.0, "a")]
    assert upsert(warehouse.engine, probe, [], KEY) == 0


def test_a_changed_value_overwrites_every_other_column(warehouse: Warehouse) -> None:
    upsert(warehouse.engine, probe, _rows(2), KEY)
    with warehouse.begin() as conn:  # on the caller's connection and transaction
        upsert(conn, probe, [{**_rows(2)[1], "value": 9.5, "note": None}], KEY)
    assert _stored(warehouse) == [("x", 0, 1.0, "a"), ("x", 1, 9.5, None)]


def test_only_the_update_columns_are_overwritten(warehouse: Warehouse) -> None:
    upsert(warehouse.engine, probe, _rows(1), KEY)
    upsert(warehouse.engine, probe, _rows(1, value=5.0, note="b"), KEY, ["value"])
    assert _stored(warehouse) == [("x", 0, 5.0, "a")]


def test_no_update_columns_is_insert_or_ignore(warehouse: Warehouse) -> None:
    upsert(warehouse.engine, probe, _rows(1), KEY)
    upsert(warehouse.engine, probe, _rows(2, value=5.0, note="b"), KEY, update_columns=())
    assert _stored(warehouse) == [("x", 0, 1.0, "a"), ("x", 1, 6.0, "b")]


def test_keep_newer_leaves_a_newer_stored_row_alone(warehouse: Warehouse) -> None:
    row = _rows(1)[0]
    upsert(warehouse.engine, probe, [row], KEY)
    older = {**row, "value": 7.0, "ts": T0 - timedelta(hours=1)}
    assert upsert(warehouse.engine, probe, [older], KEY, keep_newer="ts") == 0
    assert _stored(warehouse) == [("x", 0, 1.0, "a")]
    newer = {**row, "value": 8.0, "ts": T0 + timedelta(hours=1)}
    assert upsert(warehouse.engine, probe, [newer], KEY, keep_newer="ts") == 1
    same_time = {**row, "value": 9.0, "ts": T0 + timedelta(hours=1)}
    assert upsert(warehouse.engine, probe, [same_time], KEY, keep_newer="ts") == 1
    assert _stored(warehouse) == [("x", 0, 9.0, "a")]


def test_chunks_share_one_transaction(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("signalops.warehouse.core.UPSERT_CHUNK", 2)
    upsert(warehouse.engine, probe, _rows(5), KEY)
    assert len(_stored(warehouse)) == 5
    broken = _rows(10)
    broken[7]["value"] = None  # NOT NULL violation in the fourth chunk
    with pytest.raises(sa.exc.IntegrityError):
        upsert(warehouse.engine, probe, broken, KEY)
    assert _stored(warehouse) == [("x", i, 1.0 + i, "a") for i in range(5)]
