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
            except sa.exc.SQLAlchemyError as exc:
                self.db_ok = False
                log.error(
                    "prediction log: database write failed, spilling to %s: %s",
                    self._spill_path,
                    str(exc).splitlines()[0],
                )
        self._spill(batch)

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        from signalops.warehouse import predictions_table

        if not self._table_ready:
            self.warehouse.create_all()
            self._table_ready = True
        statement = self.warehouse.insert(predictions_table).on_conflict_do_nothing()
        with self.warehouse.engine.begin() as conn:
            conn.execute(statement, [_db_row(r) for r in rows])

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
        except sa.exc.SQLAlchemyError:
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
                except sa.exc.SQLAlchemyError as exc:
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


def _db_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for key in ("ts", "features_ts"):
        value = out.get(key)
        if isinstance(value, str):
            out[key] = datetime.fromisoformat(value)
        elif isinstance(value, (int, float)):
            out[key] = datetime.fromtimestamp(value, UTC)
    return out
