"""Failed scorings per model version, for the canary's error-rate guard: counted on the
request path (a dictionary increment), written to the warehouse table ``scoring_errors``
every ``flush_s`` by a thread of their own.

What counts as a version's failure: its model raised while predicting (the caller got a
500), or it could not read the request's input (a challenger of other inputs; the champion
answered instead, so the caller got a 200 and the challenger lost that request). Each row is
a worker's count for one minute, signal, version, role and kind; re-sending it replaces it,
so a write that failed (the database down) is simply sent again with the next one.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

STATUS = {"predict": 500, "input": 200}  # what the caller got for each kind
KEEP = timedelta(hours=1)  # minutes older than this are not re-sent


class FailureCounts:
    def __init__(self, warehouse_url: str, flush_s: float = 2.0, start: bool = True):
        self.warehouse_url = warehouse_url
        self.flush_s = flush_s
        self.worker = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock = threading.Lock()
        self._counts: dict[tuple[datetime, str, str, str, str], int] = {}
        self._dirty: set[tuple[datetime, str, str, str, str]] = set()
        self._warehouse: Any = None
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if start:
            self._thread = threading.Thread(target=self._run, name="scoring-errors", daemon=True)
            self._thread.start()

    def record(self, signal: str, version: str, role: str, kind: str, n: int = 1) -> None:
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        key = (minute, signal, version, role, kind)
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n
            self._dirty.add(key)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> int:
        """Write the counts that changed since the last good write; returns rows written."""
        from signalops.warehouse import Warehouse, scoring_errors

        with self._lock:
            dirty, self._dirty = self._dirty, set()
            rows = [
                {
                    "minute": key[0],
                    "signal_name": key[1],
                    "model_version": key[2],
                    "role": key[3],
                    "kind": key[4],
                    "worker": self.worker,
                    "status": STATUS.get(key[4], 500),
                    "count": self._counts[key],
                }
                for key in dirty
            ]
            horizon = datetime.now(UTC) - KEEP
            self._counts = {k: v for k, v in self._counts.items() if k[0] >= horizon}
        if not rows:
            return 0
        try:
            if self._warehouse is None:
                self._warehouse = Warehouse(self.warehouse_url)
                self._warehouse.create_all()
            scoring_errors.write(self._warehouse.engine, rows)
        except Exception as exc:  # the database is down: sent again with the next flush
            if self._warehouse is not None:
                self._warehouse.dispose()
                self._warehouse = None  # connect afresh next time
            with self._lock:
                self._dirty |= {k for k in dirty if k in self._counts}
            if not self._failing:
                log.warning("scoring errors not written (sent again later): %s", exc)
            self._failing = True
            return 0
        if self._failing:
            log.info("scoring errors written again")
        self._failing = False
        return len(rows)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        if self._warehouse is not None:
            self._warehouse.dispose()
