"""The prediction log's writer process, ``python -m signalops.serving.predlog_writer``: one
per server worker, started (and restarted) by its ``PredictionLogClient``. It reads batches
of rows from the server's pipe into a queue, and a flusher thread writes them to the
warehouse (``predlog_db``) or, while the database is down, to a spill file
(``predlog_files``), and replays the spill files once the database answers again.

Only an outage spills: an error of the connection kind with a probe of the database failing
too. Anything else is the rows' fault (a symbol too long for its column, a NUL, a NaN, a row
of the wrong width): spilling such a batch would replay it, and fail, forever, with every
later row behind it. So a rejected batch goes again row by row, and each row the database
still rejects goes to the dead-letter file while the rest is written. A replay does the
same, and dead-letters the spill lines that cannot be read back (torn by a crash): no spill
file can wedge the log, across restarts too.
"""

from __future__ import annotations

import fcntl
import json
import logging
import signal
import sys
import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from signalops.serving.predlog import Row
from signalops.serving.predlog_db import PredictionDatabase, describe
from signalops.serving.predlog_files import (
    DEAD_LETTER_FILE,
    DeadLetterFile,
    SpillFiles,
    dead_letter_record,
    read_spill,
)

if TYPE_CHECKING:
    from signalops.warehouse import Warehouse

log = logging.getLogger(__name__)


class PredictionLog:
    """The writer: ``submit`` queues rows, a flusher thread writes them every
    ``flush_interval_s`` (sooner once a batch is full), ``close`` writes (or spills) the
    rest."""

    def __init__(
        self,
        warehouse_url: str,
        spill_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
    ):
        self.database = PredictionDatabase(warehouse_url)
        self.spills = SpillFiles(spill_dir)
        self.dead_letters = DeadLetterFile(spill_dir.parent / "dead-letter" / DEAD_LETTER_FILE)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self._buffer: deque[Row] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._io = threading.Lock()  # one writer at a time (flusher thread or close)
        self.db_ok = True
        self.written = 0
        self.spilled = 0
        self.replayed = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def warehouse(self) -> Warehouse:
        return self.database.warehouse

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
            "dead_lettered": self.dead_letters.count,
            "last_dead_letter": self.dead_letters.last_error,
            "db_ok": self.db_ok,
        }

    def reject(self, raw: bytes, reason: str) -> None:
        """Dead-letter a batch line from the server that cannot be read back as rows (kept
        as raw text: an operator can still recover the rows in it)."""
        with self._io:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            self.dead_letters.append([dead_letter_record(None, reason, raw=text)])

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
                    self.spills.append(batch[done:])
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
                    describe(exc),
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
                rejected.append(dead_letter_record(row, describe(exc)))
            else:
                self.written += 1
        self.dead_letters.append(rejected)
        return done

    def _insert(self, rows: list[Row], copy: bool = True) -> None:
        self.database.insert(rows, copy)

    def _database_down(self, exc: BaseException) -> bool:
        """Is this failure an outage (spill, replay later) rather than rows the database
        rejects? Only an error of the outage kind with a failing probe: an error that comes
        back while the database takes writes is about the rows, and spilling them would
        replay (and fail) forever. If so, later batches spill without trying."""
        if not self.database.outage_kind(exc) or self.database.probe():
            return False
        if self.db_ok:
            log.error(
                "prediction log: database unavailable (%s); spilling rows under %s",
                describe(exc),
                self.spills.dir,
            )
        self.db_ok = False
        return True

    def _database_back(self) -> bool:
        if not self.database.probe():
            return False
        log.info("prediction log: database is back, replaying spilled rows")
        self.db_ok = True
        return True

    def _replay_spills(self) -> None:
        """Insert every spill file this process can lock (its own, or a dead process's).
        Lines that cannot be read back and rows the database rejects are dead-lettered, so
        that no file fails its replay forever."""
        for path in self.spills.to_replay():
            with open(path, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is still spilling into it
                rows, unreadable = read_spill(handle, path.name)
                self.dead_letters.append(unreadable)
                done = self._store(rows)
                self.replayed += done
                if done < len(rows):  # the database went down
                    if done or unreadable:
                        # Part of the file is dealt with: replaying all of it again would
                        # dead-letter its bad rows twice.
                        self.spills.append(rows[done:])
                        path.unlink()
                    return
                path.unlink()
                log.info("prediction log: replayed %d rows from %s", done, path.name)

    def close(self) -> None:
        """Stop the flusher and write (or spill) every queued row."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()
        self.spills.close()
        self.database.dispose()


def main() -> None:
    """``python -m signalops.serving.predlog_writer``: the writer process. First stdin line:
    its configuration; then one JSON array of rows per line; end-of-file: flush and exit."""
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
                writer.reject(line, f"unreadable batch from the server: {describe(exc)}")
                continue
        writer.submit(rows)
    done.set()
    writer.close()
    log.info("prediction log writer: %s", writer.stats())


if __name__ == "__main__":
    main()
