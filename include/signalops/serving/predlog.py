"""The prediction log: every prediction becomes a row of the warehouse ``predictions`` table.

Writes are buffered in memory and batched by a background thread, off the request path.
When the database cannot be written, the batch goes to an append-only spill file (JSON
lines, fsync'd) under the state dir instead; once the database answers again the spill
files are replayed and removed. Inserts ignore rows already present (key: request id, row
index, role), so a replay after a partial failure never duplicates. ``close`` (called on
SIGTERM through the server's shutdown) flushes everything: nothing a client got a 200 for
is lost across a database outage or a graceful restart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

log = logging.getLogger(__name__)

SPILL_PREFIX = "predictions-spill-"
COLUMNS = (
    "request_id",
    "row_index",
    "signal_name",
    "role",
    "ts",
    "symbol",
    "model_version",
    "features_hash",
    "features_ts",
    "probability",
    "signal",
    "risk_decision",
    "latency_ms",
)
PG_INSERT = (
    f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES %s "
    "ON CONFLICT (request_id, row_index, signal_name, role) DO NOTHING"
)
SQLITE_INSERT = (
    f"INSERT OR IGNORE INTO predictions ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))})"
)


class PredictionLog:
    def __init__(
        self,
        warehouse_url: str,
        spill_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
    ):
        from signalops.warehouse import Warehouse

        self.warehouse = Warehouse(warehouse_url)
        self.spill_dir = spill_dir
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._buffer: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._io = threading.Lock()  # one writer at a time (flusher thread or close)
        self._spill_path = spill_dir / f"{SPILL_PREFIX}{os.getpid()}-{int(time.time())}.jsonl"
        self._spill_file: Any = None
        self.db_ok = True
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self._table_ready = False
        # Raw DB-API errors (a dropped connection mid-insert) count as "database down" too.
        self._db_errors: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            self.warehouse.engine.dialect.loaded_dbapi.Error,
        )
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    # -- request path ----------------------------------------------------------------------

    def submit(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows (cheap: no I/O on the caller's thread)."""
        self._buffer.extend(rows)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._buffer)

    # -- background ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the flusher must survive anything; rows are already spilled
                log.exception("prediction log flush failed")

    def flush(self) -> None:
        with self._io:
            if self.db_ok or self._db_answers():
                self._replay_spills()
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))
                ]
                self._write_or_spill(batch)

    def _write_or_spill(self, batch: list[dict[str, Any]]) -> None:
        if self.db_ok:
            try:
                self._insert(batch)
                self.written += len(batch)
                return
            except self._db_errors as exc:
                self.db_ok = False
                log.error(
                    "prediction log: database write failed, spilling to %s: %s",
                    self._spill_path,
                    str(exc).splitlines()[0],
                )
        self._spill(batch)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        """One batched INSERT that skips rows already there, through the raw DB-API driver.

        The flusher shares the GIL with the request path, so it keeps its CPU small: no
        SQLAlchemy statement compilation per batch; psycopg2's execute_values on PostgreSQL,
        sqlite3's executemany on SQLite.
        """
        if not self._table_ready:
            self.warehouse.create_all()
            self._table_ready = True
        values = [tuple(_db_value(r.get(col)) for col in COLUMNS) for r in rows]
        connection = self.warehouse.engine.raw_connection()
        try:
            cursor = connection.cursor()
            if self.warehouse.dialect == "postgresql":
                from psycopg2.extras import execute_values

                execute_values(cursor, PG_INSERT, values, page_size=1000)
            else:
                cursor.executemany(SQLITE_INSERT, [_sqlite_row(v) for v in values])
            connection.commit()
        except Exception:
            connection.rollback()
            raise
        finally:
            connection.close()

    def _spill(self, rows: list[dict[str, Any]]) -> None:
        if self._spill_file is None:
            self._spill_file = open(self._spill_path, "a", encoding="utf-8")  # noqa: SIM115
            fcntl.flock(self._spill_file, fcntl.LOCK_EX)  # other processes leave it alone
        self._spill_file.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        self._spill_file.flush()
        os.fsync(self._spill_file.fileno())
        self.spilled += len(rows)

    def _db_answers(self) -> bool:
        try:
            with self.warehouse.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except self._db_errors:
            return False
        log.info("prediction log: database is back, replaying spilled rows")
        self.db_ok = True
        return True

    def _replay_spills(self) -> None:
        """Insert every spill file this process can lock (its own, or a dead process's)."""
        if self._spill_file is not None:
            self._spill_file.close()  # releases our lock; we replay it below like any other
            self._spill_file = None
        for path in sorted(self.spill_dir.glob(f"{SPILL_PREFIX}*.jsonl")):
            with open(path, "r+", encoding="utf-8") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is still spilling into it
                rows = [json.loads(line) for line in handle if line.strip()]
                try:
                    for i in range(0, len(rows), self.batch_size):
                        self._insert(rows[i : i + self.batch_size])
                except self._db_errors as exc:
                    self.db_ok = False
                    log.error("prediction log: replay of %s failed: %s", path, exc)
                    return
                path.unlink()
                self.replayed += len(rows)
                log.info("prediction log: replayed %d rows from %s", len(rows), path.name)

    def close(self) -> None:
        """Stop the flusher and write (or spill) every queued row."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        if self._spill_file is not None:
            self._spill_file.close()
            self._spill_file = None
        self.warehouse.dispose()


def _db_value(value: Any) -> Any:
    """Timestamps as aware UTC datetimes (spilled rows carry them as ISO text)."""
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value


def _sqlite_row(values: tuple[Any, ...]) -> tuple[Any, ...]:
    # SQLAlchemy's SQLite DateTime storage format (UTC wall time), so its reads agree.
    return tuple(
        v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(v, datetime) else v
        for v in values
    )
