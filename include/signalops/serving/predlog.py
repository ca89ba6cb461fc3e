"""The prediction log: every prediction becomes a row of the warehouse ``predictions`` table.

Two halves, in two processes. A server worker holds a ``PredictionLogClient``: the request
path appends a row to a list, and a sender thread ships the rows every flush interval as
one JSON line down a pipe to the worker's own writer process (``python -m
signalops.serving.predlog_writer``). The writer (``PredictionLog``) batches the inserts; it
runs in its own process so that building and sending the INSERTs never competes with
requests for the server's GIL.

When the database cannot be written, the batch goes to an append-only spill file (JSON
lines, fsync'd) under the state dir instead; once the database answers again the spill
files are replayed and removed. Inserts ignore rows already present (key: request id, row
index, signal, role), so a replay after a partial failure never duplicates. Rows the
database rejects for their content (not an outage) go to a dead-letter file instead, so
that one bad row never wedges the log.

On shutdown (SIGTERM through the server's lifespan) the client sends what it holds and
closes the pipe; the writer flushes everything (or spills it) before it exits. A writer also
flushes when its server dies abruptly (the pipe reaches end-of-file): nothing a client got a
200 for is lost across a database outage or a graceful restart.

The modules:

- ``predlog`` (this one): the row (``PredictionRow``, ``COLUMNS``, and ``Row``, the values
  that travel down the pipe and into the spill files) and the server's end of the log,
  ``PredictionLogClient``.
- ``predlog_writer``: the writer process: its queue and flusher thread, what is written,
  dead-lettered or spilled, and the replay of the spill files.
- ``predlog_db``: the writer's database end: batched inserts through the raw driver, the
  probe of whether the database takes writes, and which errors may be an outage.
- ``predlog_files``: the spill files and the dead-letter file on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

log = logging.getLogger(__name__)


def features_hash(row: np.ndarray) -> str:
    """A row's ``features_hash``: blake2b (8 bytes) of its float32 values in the model's
    column order. The log keeps this instead of the values; the explain task recomputes it on
    the offline row to check it reads what the model saw."""
    data = np.ascontiguousarray(row, dtype=np.float32).tobytes()
    return hashlib.blake2b(data, digest_size=8).hexdigest()


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
Row = list[Any] | tuple[Any, ...] | dict[str, Any]  # values in COLUMNS order (dicts: old spills)


def row_values(row: Row) -> tuple[Any, ...] | list[Any]:
    """A row's values in ``COLUMNS`` order; ValueError for a row of the wrong width (and
    TypeError for something that is not a row at all)."""
    if isinstance(row, dict):  # spill files written before rows became lists
        return tuple(row.get(col) for col in COLUMNS)
    if len(row) != len(COLUMNS):
        raise ValueError(f"prediction row has {len(row)} values, expected {len(COLUMNS)}")
    return row


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
            [sys.executable, "-m", "signalops.serving.predlog_writer"],
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
