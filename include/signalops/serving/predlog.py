"""The prediction log: every prediction becomes a row of the warehouse ``predictions`` table.

Two halves, in two processes. A server worker holds a ``PredictionLogClient``: the request
path appends a row to a list, and a sender thread ships the rows every flush interval as
one JSON line down a pipe to the worker's own writer process (``python -m
signalops.serving.predlog``). The writer (``PredictionLog``) batches the inserts; it runs in
its own process so that building and sending the INSERTs never competes with requests for
the server's GIL.

When the database cannot be written, the batch goes to an append-only spill file (JSON
lines, fsync'd) under the state dir instead; once the database answers again the spill
files are replayed and removed. Inserts ignore rows already present (key: request id, row
index, signal, role), so a replay after a partial failure never duplicates. On shutdown
(SIGTERM through the server's lifespan) the client sends what it holds and closes the
pipe; the writer flushes everything (or spills it) before it exits. A writer also flushes
when its server dies abruptly (the pipe reaches end-of-file): nothing a client got a 200 for
is lost across a database outage or a graceful restart.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
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
Row = list[Any] | tuple[Any, ...] | dict[str, Any]  # values in COLUMNS order (dicts: old spills)
PG_COPY = f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN"
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
        self._buffer: deque[Row] = deque()
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

    def submit(self, rows: list[Row]) -> None:
        """Queue rows (cheap: no I/O on the caller's thread)."""
        self._buffer.extend(rows)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def depth(self) -> int:
        return len(self._buffer)

    def stats(self) -> dict[str, Any]:
        return {
            "depth": len(self._buffer),
            "written": self.written,
            "spilled": self.spilled,
            "replayed": self.replayed,
            "db_ok": self.db_ok,
        }

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

    def _write_or_spill(self, batch: list[Row]) -> None:
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

    def _insert(self, rows: list[Row]) -> None:
        """One batched INSERT that skips rows already there, through the raw DB-API driver
        (psycopg2's execute_values on PostgreSQL, sqlite3's executemany on SQLite)."""
        if not self._table_ready:
            self.warehouse.create_all()
            self._table_ready = True
        values = [tuple(_db_value(v) for v in _ordered(r)) for r in rows]
        connection = self.warehouse.engine.raw_connection()
        try:
            cursor = connection.cursor()
            if self.warehouse.dialect == "postgresql":
                import psycopg2.errors
                from psycopg2.extras import execute_values

                # COPY costs PostgreSQL (and this process) a fraction of a multi-row INSERT.
                # It cannot skip rows already there: a batch that collides (a replay after
                # a partial failure) goes again as INSERT ... ON CONFLICT DO NOTHING.
                try:
                    cursor.copy_expert(PG_COPY, io.StringIO(_copy_text(values)))
                except psycopg2.errors.UniqueViolation:
                    connection.rollback()
                    execute_values(cursor, PG_INSERT, values, page_size=1000)
            else:
                cursor.executemany(SQLITE_INSERT, [_sqlite_row(v) for v in values])
            connection.commit()
        except Exception:
            connection.rollback()
            raise
        finally:
            connection.close()

    def _spill(self, rows: list[Row]) -> None:
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


def _ordered(row: Row) -> tuple[Any, ...] | list[Any]:
    if isinstance(row, dict):  # spill files written before rows became lists
        return tuple(row.get(col) for col in COLUMNS)
    if len(row) != len(COLUMNS):
        raise ValueError(f"prediction row has {len(row)} values, expected {len(COLUMNS)}")
    return row


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


# ---------------------------------------------------------------------------------------
# the server side: a client that ships rows to a writer process


class PredictionLogClient:
    """The request path's end of the log: ``submit`` appends rows to a list (no I/O, no
    locks); a sender thread ships them every ``flush_interval_s`` as one JSON line to the
    writer process, which it starts and restarts if it dies."""

    def __init__(
        self,
        warehouse_url: str,
        spill_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        on_stats: Callable[[dict[str, Any]], None] | None = None,
    ):
        self.on_stats = on_stats  # called with the writer's figures, about once a second
        self.config = {
            "warehouse_url": warehouse_url,
            "spill_dir": str(spill_dir),
            "batch_size": batch_size,
            "flush_interval_s": flush_interval_s,
        }
        self.flush_interval_s = flush_interval_s
        self._rows: list[Row] = []
        self._send_lock = threading.Lock()  # one sender at a time (thread or close)
        self._stop = threading.Event()
        self._writer: subprocess.Popen[bytes] | None = None
        self.writer_stats: dict[str, Any] = {}
        self.restarts = -1
        self._start_writer()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, rows: list[Row]) -> None:
        self._rows.extend(rows)  # one bytecode-level call: safe against the sender's swap

    @property
    def depth(self) -> int:
        return len(self._rows) + int(self.writer_stats.get("depth", 0))

    @property
    def spilled(self) -> int:
        return int(self.writer_stats.get("spilled", 0))

    def _start_writer(self) -> None:
        self.restarts += 1
        self._writer = subprocess.Popen(
            [sys.executable, "-m", "signalops.serving.predlog"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._writer.stdin is not None and self._writer.stdout is not None
        # The configuration (the warehouse URL may hold a password) goes down the pipe, not
        # into the command line.
        self._writer.stdin.write(orjson.dumps(self.config) + b"\n")
        self._writer.stdin.flush()
        threading.Thread(
            target=self._read_stats,
            args=(self._writer.stdout,),
            name="prediction-log-stats",
            daemon=True,
        ).start()

    def _read_stats(self, stdout: Any) -> None:
        for line in stdout:
            try:
                self.writer_stats = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.warning("prediction log writer: %r", line[:200])
                continue
            if self.on_stats is not None:
                self.on_stats(self.writer_stats)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            try:
                self.send()
            except Exception:  # the sender must survive anything
                log.exception("prediction log: sending rows to the writer failed")

    def send(self) -> None:
        with self._send_lock:
            rows, self._rows = self._rows, []
            if not rows:
                return
            line = orjson.dumps(rows, default=str) + b"\n"
            for attempt in range(2):
                writer = self._writer
                assert writer is not None and writer.stdin is not None
                try:
                    writer.stdin.write(line)
                    writer.stdin.flush()
                    return
                except OSError as exc:  # a broken pipe: the writer died
                    if attempt:
                        raise
                    log.error("prediction log writer died (%s); starting a new one", exc)
                    writer.wait(timeout=30)
                    self._start_writer()

    def close(self, timeout_s: float = 120) -> None:
        """Send every queued row, then let the writer flush (or spill) and exit."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.send()
        writer = self._writer
        assert writer is not None and writer.stdin is not None
        writer.stdin.close()
        try:
            writer.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("prediction log writer did not finish in %.0f s", timeout_s)
            writer.kill()


def main() -> None:
    """``python -m signalops.serving.predlog``: the writer process. First stdin line: its
    configuration; then one JSON array of rows per line; end-of-file: flush and exit."""
    # Ctrl-C or a process-group SIGTERM must not cut the flush short: the writer stops when
    # its server closes the pipe (or dies).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    stdin = sys.stdin.buffer
    config = orjson.loads(stdin.readline())
    writer = PredictionLog(
        config["warehouse_url"],
        Path(config["spill_dir"]),
        int(config["batch_size"]),
        float(config["flush_interval_s"]),
    )
    done = threading.Event()

    def report() -> None:  # the server shows these on /metrics
        while not done.wait(1.0):
            sys.stdout.buffer.write(orjson.dumps(writer.stats()) + b"\n")
            sys.stdout.buffer.flush()

    threading.Thread(target=report, daemon=True).start()
    for line in stdin:
        try:
            rows = orjson.loads(line)
        except orjson.JSONDecodeError as exc:  # a bug, not a data problem: say so loudly
            log.error("prediction log writer: unreadable batch dropped: %s", exc)
            continue
        writer.submit(rows)
    done.set()
    writer.close()
    log.info("prediction log writer: %s", writer.stats())


if __name__ == "__main__":
    main()
