"""The prediction log writer's database end: rows into the warehouse ``predictions`` table
through the raw DB-API driver (COPY, or an INSERT that skips rows already there, on
PostgreSQL; a batched INSERT on SQLite), a probe of whether the database takes writes now,
and which errors may mean an outage rather than rows the database rejects. What the writer
does with either answer (spill, dead-letter) is ``predlog_writer``'s business."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from signalops.serving.predlog import COLUMNS, Row, row_values

# SQLSTATE classes of a database that cannot take writes whatever the rows: connection
# exception, transaction rollback, insufficient resources, operator intervention.
OUTAGE_SQLSTATE_CLASSES = ("08", "40", "53", "57")
READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction: a standby after a failover

PG_INSERT = (
    f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES %s "
    "ON CONFLICT (request_id, row_index, signal_name, role) DO NOTHING"
)
PG_COPY = f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN"
# ON CONFLICT on the key, not INSERT OR IGNORE: OR IGNORE also skips a row that breaks NOT
# NULL, silently, where this makes it an error (and the row is dead-lettered).
SQLITE_INSERT = (
    f"INSERT INTO predictions ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (request_id, row_index, signal_name, role) DO NOTHING"
)


class PredictionDatabase:
    """The warehouse the writer inserts into: ``insert`` a batch, ``probe`` whether it takes
    writes, ``outage_kind`` whether an error could be the database's rather than the rows'."""

    def __init__(self, warehouse_url: str):
        from signalops.warehouse import Warehouse

        self.warehouse = Warehouse(warehouse_url)
        self._table_ready = False
        dbapi = self.warehouse.engine.dialect.loaded_dbapi
        # What the probe takes for "no answer": SQLAlchemy's errors and the driver's own.
        self._db_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, dbapi.Error)
        # The errors a database that cannot be reached (or cannot take writes) raises; other
        # errors can be outages too, told by their SQLSTATE (see outage_kind).
        self._outage_errors: tuple[type[BaseException], ...] = (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.DisconnectionError,
            sa.exc.TimeoutError,  # no pooled connection to be had
            dbapi.OperationalError,  # psycopg2: connection lost; sqlite3: locked, busy, I/O
            dbapi.InterfaceError,
        )

    def insert(self, rows: list[Row], copy: bool = True) -> None:
        """One batched INSERT that skips rows already there, through the raw DB-API driver
        (COPY or psycopg2's execute_values on PostgreSQL, sqlite3's executemany on SQLite).
        ``copy=False`` (the row-by-row path) goes straight to INSERT ... ON CONFLICT DO
        NOTHING, since a replayed row may well be there already."""
        if not self._table_ready:
            self.warehouse.create_all()
            self._table_ready = True
        values = [tuple(_db_value(v) for v in row_values(r)) for r in rows]
        connection = self.warehouse.engine.raw_connection()
        try:
            cursor = connection.cursor()
            if self.warehouse.dialect == "postgresql":
                import psycopg2.errors
                from psycopg2.extras import execute_values

                # COPY costs PostgreSQL (and this process) a fraction of a multi-row INSERT.
                # It cannot skip rows already there: a batch that collides (a replay after
                # a partial failure) goes again as INSERT ... ON CONFLICT DO NOTHING.
                if copy:
                    try:
                        cursor.copy_expert(PG_COPY, io.StringIO(_copy_text(values)))
                    except psycopg2.errors.UniqueViolation:
                        connection.rollback()
                        copy = False
                if not copy:
                    execute_values(cursor, PG_INSERT, values, page_size=1000)
            else:
                cursor.executemany(SQLITE_INSERT, [_sqlite_row(v) for v in values])
            connection.commit()
        except Exception as exc:
            connection.rollback()
            if _missing_table(exc):  # dropped under a running writer: create it again
                self._table_ready = False
            raise
        finally:
            connection.close()

    def outage_kind(self, exc: BaseException) -> bool:
        """Could this error mean the database is unreachable or refuses every write (rather
        than these rows)? Connection errors, and the SQLSTATE classes of connection
        exceptions, transaction rollbacks (deadlocks), insufficient resources and operator
        intervention (shutdown, cancel), and a read-only transaction (a standby after a
        failover). Only a probe tells for sure (see PredictionLog._database_down)."""
        code = getattr(getattr(exc, "orig", None) or exc, "pgcode", None)  # SQLAlchemy wraps
        if code and (code[:2] in OUTAGE_SQLSTATE_CLASSES or code == READ_ONLY_SQLSTATE):
            return True
        return isinstance(exc, self._outage_errors)

    def probe(self) -> bool:
        """Can the database take writes now? On PostgreSQL: it answers, and not read-only (a
        standby answers every SELECT and refuses every row). On SQLite: the write lock can
        be taken (a SELECT needs no lock, so it would call a locked database healthy)."""
        try:
            connection = self.warehouse.engine.raw_connection()
            try:
                cursor = connection.cursor()
                if self.warehouse.dialect == "postgresql":
                    cursor.execute("SELECT current_setting('transaction_read_only')")
                    answer = cursor.fetchone()
                    writable = answer is not None and answer[0] == "off"
                else:
                    cursor.execute("BEGIN IMMEDIATE")
                    writable = True
                connection.rollback()
            finally:
                connection.close()
        except self._db_errors:
            return False
        return writable

    def dispose(self) -> None:
        self.warehouse.dispose()


def describe(exc: BaseException) -> str:
    """The error class and the first line of its message, of the driver's error rather
    than SQLAlchemy's wrapper (whose text repeats the SQL)."""
    exc = getattr(exc, "orig", None) or exc
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def _missing_table(exc: BaseException) -> bool:
    """The predictions table is gone (a warehouse reset under a running writer): a schema
    problem, which the next insert fixes by creating it, not a reason to reject rows."""
    exc = getattr(exc, "orig", None) or exc
    return getattr(exc, "pgcode", None) == "42P01" or "no such table" in str(exc)


def _db_value(value: Any) -> Any:
    """Timestamps as aware UTC datetimes (spilled rows carry them as ISO text). A NaN or an
    infinity is refused (ValueError): PostgreSQL would store it, SQLite would make it NULL,
    and the server's pipe (orjson) already turns it into null; it is never a measurement."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite number {value!r}")
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(values: list[tuple[Any, ...]]) -> str:
    """Rows in COPY's text format: tab-separated, \\N for NULL, backslash escapes."""
    lines = []
    for row in values:
        fields = []
        for v in row:
            if v is None:
                fields.append("\\N")
            elif isinstance(v, str):
                fields.append(v.translate(_COPY_ESCAPES))
            elif isinstance(v, datetime):
                fields.append(v.isoformat())
            elif isinstance(v, float):
                fields.append(repr(v))
            else:
                fields.append(str(v))
        lines.append("\t".join(fields))
    return "\n".join(lines) + "\n"


def _sqlite_row(values: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLAlchemy's SQLite DateTime storage format (UTC wall time), so its reads agree.
    return tuple(
        v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
        for v in values
    )
