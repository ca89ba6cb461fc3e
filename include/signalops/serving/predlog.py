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
index, signal, role), so a replay after a partial failure never duplicates.

Only an outage spills: an error of the connection kind with a probe of the database failing
too. Anything else is the rows' fault (a symbol too long for its column, a NUL, a NaN, a row
of the wrong width): spilling such a batch would replay it, and fail, forever, with every
later row behind it. So a rejected batch goes again row by row, and each row the database
still rejects goes to the dead-letter file (``dead-letter/predictions-dead-letter.jsonl``
beside the spill dir: JSON lines with the time, request id, error and row) while the rest
is written. A replay does the same, and dead-letters the spill lines that cannot be read
back (torn by a crash): no spill file can wedge the log, across restarts too.

On shutdown (SIGTERM through the server's lifespan) the client sends what it holds and
closes the pipe; the writer flushes everything (or spills it) before it exits. A writer also
flushes when its server dies abruptly (the pipe reaches end-of-file): nothing a client got a
200 for is lost across a database outage or a graceful restart.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import math
import operator
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
import sqlalchemy as sa

log = logging.getLogger(__name__)

SPILL_PREFIX = "predictions-spill-"
DEAD_LETTER_FILE = "predictions-dead-letter.jsonl"  # in the spill dir's sibling dead-letter/
# SQLSTATE classes of a database that cannot take writes whatever the rows: connection
# exception, transaction rollback, insufficient resources, operator intervention.
OUTAGE_SQLSTATE_CLASSES = ("08", "40", "53", "57")
READ_ONLY_SQLSTATE = "25006"  # read_only_sql_transaction: a standby after a failover


@dataclass(frozen=True, slots=True)
class PredictionRow:
    """One row of the warehouse ``predictions`` table, as the sidecar logs it; the log
    writer's columns (``COLUMNS``) derive from it, and a unit test holds it to the table."""

    request_id: str
    row_index: int  # position in a batch request
    signal_name: str
    role: str  # champion | challenger | pinned | shadow
    ts: datetime
    symbol: str | None
    model_version: str
    features_hash: str
    features_ts: datetime | None
    probability: float
    signal: str  # BUY | SELL | HOLD
    risk_decision: str
    latency_ms: float

    def values(self) -> tuple[Any, ...]:
        """The values in ``COLUMNS`` order: what travels to the writer and the spill."""
        return _VALUES(self)


COLUMNS = tuple(f.name for f in fields(PredictionRow))
_VALUES = operator.attrgetter(*COLUMNS)
PG_INSERT = (
    f"INSERT INTO predictions ({', '.join(COLUMNS)}) VALUES %s "
    "ON CONFLICT (request_id, row_index, signal_name, role) DO NOTHING"
)
Row = list[Any] | tuple[Any, ...] | dict[str, Any]  # values in COLUMNS order (dicts: old spills)
PG_COPY = f"COPY predictions ({', '.join(COLUMNS)}) FROM STDIN"
# ON CONFLICT on the key, not INSERT OR IGNORE: OR IGNORE also skips a row that breaks NOT
# NULL, silently, where this makes it an error (and the row is dead-lettered).
SQLITE_INSERT = (
    f"INSERT INTO predictions ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (request_id, row_index, signal_name, role) DO NOTHING"
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
        self.dead_letter_path = spill_dir.parent / "dead-letter" / DEAD_LETTER_FILE
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._buffer: deque[Row] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._io = threading.Lock()  # one writer at a time (flusher thread or close)
        self._spill_path = self._new_spill_path()
        self._spill_file: Any = None
        self.db_ok = True
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self.dead_lettered = 0
        self.last_dead_letter: str | None = None
        self._table_ready = False
        dbapi = self.warehouse.engine.dialect.loaded_dbapi
        # What the probe takes for "no answer": SQLAlchemy's errors and the driver's own.
        self._db_errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError, dbapi.Error)
        # The errors a database that cannot be reached (or cannot take writes) raises; other
        # errors can be outages too, told by their SQLSTATE (see _outage_kind).
        self._outage_errors: tuple[type[BaseException], ...] = (
            sa.exc.OperationalError,
            sa.exc.InterfaceError,
            sa.exc.DisconnectionError,
            sa.exc.TimeoutError,  # no pooled connection to be had
            dbapi.OperationalError,  # psycopg2: connection lost; sqlite3: locked, busy, I/O
            dbapi.InterfaceError,
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
            "dead_lettered": self.dead_lettered,
            "last_dead_letter": self.last_dead_letter,
            "db_ok": self.db_ok,
        }

    def reject(self, raw: bytes, reason: str) -> None:
        """Dead-letter a batch line from the server that cannot be read back as rows (kept
        as raw text: an operator can still recover the rows in it)."""
        with self._io:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            self._dead_letter([_dead_letter_record(None, reason, raw=text)])

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
            if self.db_ok or self._database_back():
                self._replay_spills()
            while self._buffer:
                batch = [
                    self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))
                ]
                done = self._store(batch) if self.db_ok else 0
                if done < len(batch):
                    self._spill(batch[done:])
                    self.spilled += len(batch) - done

    def _store(self, rows: list[Row]) -> int:
        """Insert rows a batch at a time. A batch rejected for its content goes again row by
        row, and the rows the database rejects on their own go to the dead-letter file: a
        bad row costs only itself, never the rows around it. Returns how many rows were dealt
        with (written or dead-lettered): all of them, unless the database went down part-way
        (the caller keeps the rest for a later replay)."""
        for start in range(0, len(rows), self.batch_size):
            batch = rows[start : start + self.batch_size]
            try:
                self._insert(batch)
            except Exception as exc:
                if self._database_down(exc):
                    return start
                log.info(
                    "prediction log: a batch of %d rows was rejected (%s); inserting them one "
                    "by one",
                    len(batch),
                    _describe(exc),
                )
                done = self._insert_one_by_one(batch)
                if done < len(batch):
                    return start + done
            else:
                self.written += len(batch)
        return len(rows)

    def _insert_one_by_one(self, rows: list[Row]) -> int:
        """The slow path, after a batch failed: each row its own INSERT, the rejected ones
        dead-lettered (together, one fsync). Returns how many rows were dealt with before the
        database went down (all of them if it did not): the failing row and the rest are not
        dead-lettered then, the outage is not theirs."""
        rejected: list[dict[str, Any]] = []
        done = len(rows)
        for i, row in enumerate(rows):
            try:
                self._insert([row], copy=False)
            except Exception as exc:
                if self._database_down(exc):
                    done = i
                    break
                rejected.append(_dead_letter_record(row, _describe(exc)))
            else:
                self.written += 1
        self._dead_letter(rejected)
        return done

    def _insert(self, rows: list[Row], copy: bool = True) -> None:
        """One batched INSERT that skips rows already there, through the raw DB-API driver
        (COPY or psycopg2's execute_values on PostgreSQL, sqlite3's executemany on SQLite).
        ``copy=False`` (the row-by-row path) goes straight to INSERT ... ON CONFLICT DO
        NOTHING, since a replayed row may well be there already."""
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

    def _outage_kind(self, exc: BaseException) -> bool:
        """Could this error mean the database is unreachable or refuses every write (rather
        than these rows)? Connection errors, and the SQLSTATE classes of connection
        exceptions, transaction rollbacks (deadlocks), insufficient resources and operator
        intervention (shutdown, cancel), and a read-only transaction (a standby after a
        failover). Only a probe tells for sure (see _database_down)."""
        code = getattr(getattr(exc, "orig", None) or exc, "pgcode", None)  # SQLAlchemy wraps
        if code and (code[:2] in OUTAGE_SQLSTATE_CLASSES or code == READ_ONLY_SQLSTATE):
            return True
        return isinstance(exc, self._outage_errors)

    def _database_down(self, exc: BaseException) -> bool:
        """Is this failure an outage (spill, replay later) rather than rows the database
        rejects? Only an error of the outage kind with a failing probe: an error that comes
        back while the database takes writes is about the rows, and spilling them would
        replay (and fail) forever. If so, later batches spill without trying."""
        if not self._outage_kind(exc) or self._probe():
            return False
        if self.db_ok:
            log.error(
                "prediction log: database unavailable (%s); spilling rows under %s",
                _describe(exc),
                self.spill_dir,
            )
        self.db_ok = False
        return True

    def _probe(self) -> bool:
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

    def _database_back(self) -> bool:
        if not self._probe():
            return False
        log.info("prediction log: database is back, replaying spilled rows")
        self.db_ok = True
        return True

    def _new_spill_path(self) -> Path:
        return self.spill_dir / f"{SPILL_PREFIX}{os.getpid()}-{time.time_ns()}.jsonl"

    def _spill(self, rows: list[Row]) -> None:
        if self._spill_file is None:
            self._spill_file = open(self._spill_path, "a", encoding="utf-8")  # noqa: SIM115
            fcntl.flock(self._spill_file, fcntl.LOCK_EX)  # other processes leave it alone
        self._spill_file.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        self._spill_file.flush()
        os.fsync(self._spill_file.fileno())

    def _dead_letter(self, records: list[dict[str, Any]]) -> None:
        """Append rejected rows to the dead-letter file, for an operator to look at (and fix
        and insert again): JSON lines in ASCII (NULs and control characters escaped), under a
        lock (the server's other workers' writers share it), fsync'd. One error line per
        call, not per row: a systematic reject (a field too long in every row) must not
        flood the log."""
        if not records:
            return
        data = "".join(json.dumps(r, default=str) + "\n" for r in records)
        self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.dead_letter_path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(data.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        self.dead_lettered += len(records)
        self.last_dead_letter = records[-1]["error"][:200]
        log.error(
            "prediction log: %d row(s) dead-lettered to %s (first: request %.80r: %s)",
            len(records),
            self.dead_letter_path,
            records[0]["request_id"],
            records[0]["error"],
        )

    def _replay_spills(self) -> None:
        """Insert every spill file this process can lock (its own, or a dead process's).
        Lines that cannot be read back and rows the database rejects are dead-lettered, so
        that no file fails its replay forever."""
        if self._spill_file is not None:
            self._spill_file.close()  # releases our lock; we replay it below like any other
            self._spill_file = None
            # A replay cut short moves the rest of a file into a new spill file, never into
            # the one being replayed.
            self._spill_path = self._new_spill_path()
        for path in sorted(self.spill_dir.glob(f"{SPILL_PREFIX}*.jsonl")):
            with open(path, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is still spilling into it
                rows, unreadable = self._read_spill(handle, path.name)
                done = self._store(rows)
                self.replayed += done
                if done < len(rows):  # the database went down
                    if done or unreadable:
                        # Part of the file is dealt with: replaying all of it again would
                        # dead-letter its bad rows twice.
                        self._spill(rows[done:])
                        path.unlink()
                    return
                path.unlink()
                log.info("prediction log: replayed %d rows from %s", done, path.name)

    def _read_spill(self, handle: BinaryIO, name: str) -> tuple[list[Row], int]:
        """The rows of a spill file, and how many lines could not be read back (a line torn
        by a crash mid-write, not JSON, not UTF-8, not a row): those are dead-lettered with
        their raw text."""
        rows: list[Row] = []
        rejected: list[dict[str, Any]] = []
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
                _ordered(row)  # a row's shape, or ValueError / TypeError
            except (ValueError, TypeError) as exc:
                text = raw.decode("utf-8", "backslashreplace").rstrip("\n")
                reason = f"unreadable spill line ({name}:{number}): {_describe(exc)}"
                rejected.append(_dead_letter_record(None, reason, raw=text))
                continue
            rows.append(row)
        self._dead_letter(rejected)
        return rows, len(rejected)

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


def _as_columns(row: Any) -> dict[str, Any] | None:
    """A row as {column: value} (a NaN as the text "nan": the file stays strict JSON), or
    None for something that has not the shape of a row."""
    try:
        values = _ordered(row)
    except (TypeError, ValueError):
        return None
    return {
        col: repr(v) if isinstance(v, float) and not math.isfinite(v) else v
        for col, v in zip(COLUMNS, values, strict=True)
    }


def _dead_letter_record(row: Any, error: str, raw: str | None = None) -> dict[str, Any]:
    """One line of the dead-letter file: when, which request, why, and the row; the raw text
    too when the row cannot be read as columns."""
    columns = _as_columns(row)
    record: dict[str, Any] = {
        "time": datetime.now(UTC).isoformat(),
        "request_id": columns["request_id"] if columns else None,
        "error": error,
        "row": columns,
    }
    if columns is None:
        record["raw"] = raw if raw is not None else json.dumps(row, default=str)
    return record


def _describe(exc: BaseException) -> str:
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

    def submit(self, rows: list[PredictionRow]) -> None:
        values = [row.values() for row in rows]
        self._rows.extend(values)  # one bytecode-level call: safe against the sender's swap

    @property
    def depth(self) -> int:
        return len(self._rows) + int(self.writer_stats.get("depth", 0))

    @property
    def spilled(self) -> int:
        return int(self.writer_stats.get("spilled", 0))

    @property
    def dead_lettered(self) -> int:
        return int(self.writer_stats.get("dead_lettered", 0))

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
            try:
                line = orjson.dumps(rows, default=str) + b"\n"
            except orjson.JSONEncodeError:
                # A lone surrogate, an integer over 64 bits: the standard library writes them,
                # and the writer dead-letters that row rather than this lot being lost.
                line = json.dumps(rows, default=str).encode() + b"\n"
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
        except orjson.JSONDecodeError:
            try:  # what the server could only write with the standard library (see send)
                rows = json.loads(line)
            except ValueError as exc:
                writer.reject(line, f"unreadable batch from the server: {_describe(exc)}")
                continue
        writer.submit(rows)
    done.set()
    writer.close()
    log.info("prediction log writer: %s", writer.stats())


if __name__ == "__main__":
    main()
