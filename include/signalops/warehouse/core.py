"""The warehouse connection (``Warehouse``), the one upsert, and the timestamp helpers.

SQLite (embedded default) and PostgreSQL (production) behave the same. Timestamps come back
as timezone-aware pandas timestamps (``to_utc_series``). Every writer upserts on its
table's key (``upsert``: INSERT .. ON CONFLICT on both dialects), so re-running a task for
the same interval leaves the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from signalops.warehouse import schema

if TYPE_CHECKING:
    from signalops.warehouse.bars import UpsertResult

UPSERT_CHUNK = 2_000  # rows per executemany; every chunk in the caller's one transaction


def insert_statement(dialect: str, table: sa.Table) -> Any:
    """A dialect-specific INSERT that supports ON CONFLICT."""
    if dialect not in ("postgresql", "sqlite"):
        raise NotImplementedError(f"warehouse dialect {dialect!r} is not supported")
    module = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table)


def upsert(
    target: sa.Engine | sa.Connection,
    table: sa.Table,
    rows: Iterable[Mapping[str, Any]],
    key_columns: Sequence[str],
    update_columns: Sequence[str] | None = None,
    *,
    keep_newer: str | None = None,
) -> int:
    """INSERT ``rows`` into ``table``; a row whose ``key_columns`` exist already overwrites
    ``update_columns`` (None: every other column, a key-based replace; empty: none, an
    insert-or-ignore). ``keep_newer`` names a column: a stored row whose value there is newer
    than the incoming one is left alone. Rows go in chunks of ``UPSERT_CHUNK`` on one
    transaction (the connection's, or one opened on an engine). Returns the driver's count
    of rows written (exact when one row is written per call)."""
    rows = list(rows)
    if not rows:
        return 0
    if isinstance(target, sa.Engine):
        with target.begin() as conn:
            return upsert(conn, table, rows, key_columns, update_columns, keep_newer=keep_newer)
    stmt = insert_statement(target.dialect.name, table)
    if update_columns is None:
        update_columns = [c.name for c in table.columns if c.name not in key_columns]
    if update_columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(key_columns),
            set_={c: stmt.excluded[c] for c in update_columns},
            where=None if keep_newer is None else table.c[keep_newer] <= stmt.excluded[keep_newer],
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(key_columns))
    written = 0
    for i in range(0, len(rows), UPSERT_CHUNK):
        written += target.execute(stmt, rows[i : i + UPSERT_CHUNK]).rowcount
    return written


class Warehouse:
    """A handle on the warehouse database (create one per task; it owns an engine).

    ``connect``/``begin`` hand out connections for the table modules' query functions
    (``signalops.warehouse.rollouts.active(conn, signal)``, ...); the bar queries are also
    methods here, as they have always been.
    """

    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create_all(self) -> None:
        schema.create_all(self.engine)

    def tables(self) -> set[str]:
        """The tables that exist (``create_all`` not run: maybe none)."""
        return schema.table_names(self.engine)

    def connect(self) -> sa.Connection:
        """A connection for reads (``with warehouse.connect() as conn``)."""
        return self.engine.connect()

    def begin(self) -> AbstractContextManager[sa.Connection]:
        """A connection in a transaction, committed when the block ends without an error."""
        return self.engine.begin()

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def insert(self, table: sa.Table) -> Any:
        """A dialect-specific INSERT that supports ON CONFLICT."""
        return insert_statement(self.dialect, table)

    # -- bars (signalops.warehouse.bars) ----------------------------------------------------

    def upsert_bars(self, bars: pd.DataFrame, source: str) -> UpsertResult:
        """Insert new bars, overwrite changed ones (late corrections), leave equal ones alone.

        Runs in one transaction: either the whole batch lands or nothing does.
        """
        from signalops.warehouse import bars as b

        return b.upsert_bars(self.engine, bars, source)

    def read_bars(
        self, symbols: list[str] | None, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        """Bars with ``start <= ts < end`` (open bounds when None), sorted by symbol and ts."""
        from signalops.warehouse import bars as b

        with self.engine.connect() as conn:
            return b.read(conn, symbols, start, end)

    def read_bars_around(
        self, symbols: list[str], start: datetime, end: datetime, before: int, after: int
    ) -> pd.DataFrame:
        """Each symbol's bars in ``[start, end)`` plus its ``before`` bars before ``start``
        and its ``after`` bars from ``end`` on (``bars.read_around``)."""
        from signalops.warehouse import bars as b

        with self.engine.connect() as conn:
            return b.read_around(conn, symbols, start, end, before, after)

    def bars_before(self, symbols: list[str], before: datetime, count: int) -> dict[str, Any]:
        """Per symbol: how many bars precede ``before`` (up to ``count``) and the first bar's ts."""
        from signalops.warehouse import bars as b

        with self.engine.connect() as conn:
            return b.count_before(conn, symbols, before)

    def bar_stats(self) -> pd.DataFrame:
        """Per symbol: number of bars, first and last ts."""
        from signalops.warehouse import bars as b

        with self.engine.connect() as conn:
            return b.stats(conn)

    def previous_bar_ts(self, symbols: list[str], before: datetime) -> dict[str, pd.Timestamp]:
        """Each symbol's newest bar strictly before ``before`` (symbols without one: absent)."""
        from signalops.warehouse import bars as b

        with self.engine.connect() as conn:
            return b.previous_ts(conn, symbols, before)

    def last_bar_ts(self) -> pd.Timestamp | None:
        from signalops.warehouse import bars as b

        with self.engine.connect() as conn:
            return b.last_ts(conn)


def to_utc_series(values: pd.Series) -> pd.Series:
    """Database timestamps (aware from PostgreSQL, naive UTC text from SQLite) to UTC."""
    parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    return parsed.astype("datetime64[ns, UTC]")


def to_utc(value: datetime | pd.Timestamp) -> datetime:
    """A bound for a query: ``value`` as an aware UTC datetime (naive means UTC)."""
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the Airflow UI and a running task read while another task writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
