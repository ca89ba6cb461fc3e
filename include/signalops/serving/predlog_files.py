"""The prediction log writer's files on disk.

Spill files hold the rows a database outage kept out, until they are replayed: JSON lines,
one row's values each, appended and fsync'd, one file per writer (``predictions-spill-<pid>-
<ns>.jsonl`` in the spill dir), locked while its writer appends to it. The dead-letter file
(``dead-letter/predictions-dead-letter.jsonl`` beside the spill dir) holds what was rejected
for good, for an operator to look at: JSON lines with the time, request id, error and row,
shared by the writers of all the server's workers. When to spill, replay or dead-letter is
``predlog_writer``'s business."""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from signalops.serving.predlog import COLUMNS, Row, row_values
from signalops.serving.predlog_db import describe

log = logging.getLogger(__name__)

SPILL_PREFIX = "predictions-spill-"
DEAD_LETTER_FILE = "predictions-dead-letter.jsonl"  # in the spill dir's sibling dead-letter/


class SpillFiles:
    """The spill dir: this writer's own spill file, and every spill file to replay (its own,
    and those of writers that died)."""

    def __init__(self, spill_dir: Path):
        self.dir = spill_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self._path = self._new_path()
        self._file: Any = None

    def _new_path(self) -> Path:
        return self.dir / f"{SPILL_PREFIX}{os.getpid()}-{time.time_ns()}.jsonl"

    def append(self, rows: list[Row]) -> None:
        if self._file is None:
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
            fcntl.flock(self._file, fcntl.LOCK_EX)  # other processes leave it alone
        self._file.write("".join(json.dumps(r, default=str) + "\n" for r in rows))
        self._file.flush()
        os.fsync(self._file.fileno())

    def to_replay(self) -> list[Path]:
        """Every spill file in the dir, this writer's own included (closed first, so that it
        can be replayed like any other); later rows go to a new file of its own."""
        if self._file is not None:
            self._file.close()  # releases our lock; we replay it below like any other
            self._file = None
            # A replay cut short moves the rest of a file into a new spill file, never into
            # the one being replayed.
            self._path = self._new_path()
        return sorted(self.dir.glob(f"{SPILL_PREFIX}*.jsonl"))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def read_spill(handle: BinaryIO, name: str) -> tuple[list[Row], list[dict[str, Any]]]:
    """The rows of a spill file, and dead-letter records for the lines that cannot be read
    back (a line torn by a crash mid-write, not JSON, not UTF-8, not a row), with their raw
    text."""
    rows: list[Row] = []
    rejected: list[dict[str, Any]] = []
    for number, raw in enumerate(handle, 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
            row_values(row)  # a row's shape, or ValueError / TypeError
        except (ValueError, TypeError) as exc:
            text = raw.decode("utf-8", "backslashreplace").rstrip("\n")
            reason = f"unreadable spill line ({name}:{number}): {describe(exc)}"
            rejected.append(dead_letter_record(None, reason, raw=text))
            continue
        rows.append(row)
    return rows, rejected


class DeadLetterFile:
    """The dead-letter file, and how many rows this writer has put in it."""

    def __init__(self, path: Path):
        self.path = path
        self.count = 0
        self.last_error: str | None = None

    def append(self, records: list[dict[str, Any]]) -> None:
        """Append rejected rows to the dead-letter file, for an operator to look at (and fix
        and insert again): JSON lines in ASCII (NULs and control characters escaped), under a
        lock (the server's other workers' writers share it), fsync'd. One error line per
        call, not per row: a systematic reject (a field too long in every row) must not
        flood the log."""
        if not records:
            return
        data = "".join(json.dumps(r, default=str) + "\n" for r in records)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(data.encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        self.count += len(records)
        self.last_error = records[-1]["error"][:200]
        log.error(
            "prediction log: %d row(s) dead-lettered to %s (first: request %.80r: %s)",
            len(records),
            self.path,
            records[0]["request_id"],
            records[0]["error"],
        )


def dead_letter_record(row: Any, error: str, raw: str | None = None) -> dict[str, Any]:
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


def _as_columns(row: Any) -> dict[str, Any] | None:
    """A row as {column: value} (a NaN as the text "nan": the file stays strict JSON), or
    None for something that has not the shape of a row."""
    try:
        values = row_values(row)
    except (TypeError, ValueError):
        return None
    return {
        col: repr(v) if isinstance(v, float) and not math.isfinite(v) else v
        for col, v in zip(COLUMNS, values, strict=True)
    }
