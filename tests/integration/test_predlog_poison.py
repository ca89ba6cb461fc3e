"""One bad row must never wedge the prediction log: against a real PostgreSQL (and SQLite), a
row the database rejects goes to the dead-letter file while the rows around it are written,
a poisoned spill file left by an earlier process is replayed (and removed) by a new writer,
and only a database that cannot take writes (nothing listening, a locked SQLite file, an
outage in the middle of a row-by-row pass) makes rows spill."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from signalops.serving.predlog import COLUMNS, PredictionLogClient, PredictionRow
from signalops.serving.predlog_files import SPILL_PREFIX
from signalops.serving.predlog_writer import PredictionLog
from tests.integration.test_predlog import REPO, _row
from tests.sidecar_process import free_port

pytestmark = pytest.mark.integration

BOTH = ("postgresql", "sqlite")
PLUS_FIVE = timezone(timedelta(hours=5))

# kind: (the bad row, {backend: what its dead-letter error says}); a backend not named takes
# the row as it is (SQLite neither checks lengths nor refuses NULs).
POISON: dict[str, tuple[list[Any], dict[str, str]]] = {
    "symbol_too_long": (
        _row("bad", symbol="S" * 65),
        {"postgresql": "StringDataRightTruncation: value too long for type character varying(64)"},
    ),
    "nul_in_symbol": (_row("bad", symbol="A\x00B"), {"postgresql": "NUL (0x00)"}),
    "nul_in_request_id": (_row("bad\x00id"), {"postgresql": "NUL (0x00)"}),
    "risk_decision_too_long": (
        _row("bad", risk_decision="r" * 257),
        {"postgresql": "value too long for type character varying(256)"},
    ),
    "nan_probability": (
        _row("bad", probability=float("nan")),
        dict.fromkeys(BOTH, "ValueError: non-finite number nan"),
    ),
    "infinite_latency": (
        _row("bad", latency_ms=float("inf")),
        dict.fromkeys(BOTH, "ValueError: non-finite number inf"),
    ),
    "wrong_width": (
        _row("bad")[:3],
        dict.fromkeys(BOTH, "ValueError: prediction row has 3 values, expected 13"),
    ),
    "year_one_with_an_offset": (
        _row("bad", ts=datetime(1, 1, 1, tzinfo=PLUS_FIVE)),
        dict.fromkeys(BOTH, "OverflowError: date value out of range"),
    ),
    "null_in_a_not_null_column": (  # what a NaN becomes on the server's pipe (orjson)
        _row("bad", model_version=None),
        {"postgresql": "NotNullViolation", "sqlite": "NOT NULL constraint failed"},
    ),
    "row_index_out_of_range": (
        _row("bad", row_index=2**70),
        {"postgresql": "out of range", "sqlite": "OverflowError"},
    ),
}


def _url(backend: str, pg_url: str, tmp_path: Path) -> str:
    return pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'wh.db'}"


def _request_ids(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT request_id FROM predictions")).scalars())
    finally:
        engine.dispose()


def _dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    """The dead-letter file of a writer whose spill dir is tmp_path / "spill"."""
    path = tmp_path / "dead-letter" / "predictions-dead-letter.jsonl"
    if not path.exists():
        return []
    data = path.read_bytes()
    data.decode("ascii")  # NULs, control characters, surrogates: all escaped
    return [json.loads(line) for line in data.splitlines()]


def _spill_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spill").glob(f"{SPILL_PREFIX}*.jsonl"))


def _as_dead_lettered(row: list[Any]) -> dict[str, Any]:
    """A row as its dead-letter record shows it (JSON; datetimes as text, a NaN as "nan")."""
    plain = [repr(v) if isinstance(v, float) and not math.isfinite(v) else v for v in row]
    return dict(json.loads(json.dumps(dict(zip(COLUMNS, plain, strict=True)), default=str)))


@pytest.mark.parametrize(
    ("backend", "kind"),
    [(backend, kind) for kind, (_, errors) in POISON.items() for backend in errors],
)
def test_a_bad_row_is_dead_lettered_and_the_rows_around_it_are_written(
    backend: str, kind: str, pg_url: str, tmp_path: Path
) -> None:
    bad, errors = POISON[kind]
    url = _url(backend, pg_url, tmp_path)
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=60)
    log.submit([_row("before"), list(bad), _row("after", row_index=1)])
    log.close()

    assert _request_ids(url) == {"before", "after"}
    stats = log.stats()
    assert (stats["written"], stats["dead_lettered"], stats["spilled"]) == (2, 1, 0)
    assert stats["db_ok"] is True
    assert errors[backend] in stats["last_dead_letter"]
    assert _spill_files(tmp_path) == []
    (record,) = _dead_letters(tmp_path)
    assert errors[backend] in record["error"]
    assert datetime.fromisoformat(record["time"]).tzinfo is not None
    if kind == "wrong_width":  # not a row: kept as raw text
        assert record["request_id"] is None and record["row"] is None
        assert json.loads(record["raw"])[0] == "bad"
    else:
        assert record["request_id"] == bad[0]
        assert record["row"] == _as_dead_lettered(bad)


@pytest.mark.parametrize("backend", BOTH)
def test_a_poisoned_spill_file_of_an_earlier_process_is_replayed_and_removed(
    backend: str, pg_url: str, tmp_path: Path
) -> None:
    url = _url(backend, pg_url, tmp_path)
    spill_dir = tmp_path / "spill"
    spill_dir.mkdir()

    def line(row: Any) -> bytes:
        return json.dumps(row, default=str).encode() + b"\n"

    old_dict_row = dict(zip(COLUMNS, _row("s-good-dict", row_index=1), strict=True))
    spill = spill_dir / f"{SPILL_PREFIX}4242-1.jsonl"
    spill.write_bytes(
        line(_row("s-good"))
        + b"\x00\x00\x00\x00\x00\x00\x00\x00\n"  # a block of zeros after a crash
        + line(_row("s-long", symbol="S" * 65))
        + b'["s-not-utf8", "\xff\xfe"]\n'
        + b"\n"
        + line(_row("s-nul\x00"))
        + line(["s-short", 0, "direction_1h"])
        + line(_row("s-nan", probability=float("nan")))  # json writes NaN, and reads it back
        + line(old_dict_row)
        + line(_row("s-year-one", ts=datetime(1, 1, 1, tzinfo=PLUS_FIVE)))
        + b'["s-torn", 0, "direction_1h", "cham'  # the last write, cut short
    )

    log = PredictionLog(url, spill_dir, flush_interval_s=60)
    log.close()

    postgres_rejects = {"s-long", "s-nul\x00"}  # SQLite takes them
    expected = {"s-good", "s-good-dict"}
    if backend == "sqlite":
        expected |= postgres_rejects
    assert _request_ids(url) == expected
    assert not spill.exists() and _spill_files(tmp_path) == []

    records = _dead_letters(tmp_path)
    unreadable = [r for r in records if r["error"].startswith("unreadable spill line")]
    assert [r["error"].split(": ")[0] for r in unreadable] == [
        f"unreadable spill line ({spill.name}:{number})" for number in (2, 4, 7, 11)
    ]
    raw = {r["raw"] for r in unreadable}
    assert '["s-not-utf8", "\\xff\\xfe"]' in raw
    assert '["s-torn", 0, "direction_1h", "cham' in raw
    assert '["s-short", 0, "direction_1h"]' in raw
    assert "\x00" * 8 in raw
    assert all(r["row"] is None and r["request_id"] is None for r in unreadable)
    rejected = {r["request_id"]: r["error"] for r in records if r not in unreadable}
    expected_rejects = {"s-nan", "s-year-one"}
    if backend == "postgresql":
        expected_rejects |= postgres_rejects
    assert set(rejected) == expected_rejects
    assert "non-finite number nan" in rejected["s-nan"]
    assert "OverflowError" in rejected["s-year-one"]

    stats = log.stats()
    assert stats["dead_lettered"] == len(records) == 4 + len(expected_rejects)
    assert stats["replayed"] == 6  # the rows read back: written or dead-lettered
    assert stats["written"] == len(expected)

    # Nothing is left to fail again: a third writer finds no file, dead-letters nothing.
    again = PredictionLog(url, spill_dir, flush_interval_s=60)
    again.close()
    assert again.stats()["dead_lettered"] == 0 and len(_dead_letters(tmp_path)) == len(records)


def test_an_outage_spills_and_the_bad_row_is_dead_lettered_once_the_database_is_back(
    pg_url: str, tmp_path: Path
) -> None:
    nothing_listening = (
        sa.make_url(pg_url).set(port=free_port()).render_as_string(hide_password=False)
    )
    rows = [_row("o-before"), _row("o-long", symbol="S" * 65), _row("o-after", row_index=1)]
    down = PredictionLog(nothing_listening, tmp_path / "spill", flush_interval_s=60)
    down.submit([list(r) for r in rows])
    down.close()
    stats = down.stats()
    assert (stats["written"], stats["spilled"], stats["dead_lettered"]) == (0, 3, 0)
    assert stats["db_ok"] is False
    (spill,) = _spill_files(tmp_path)
    assert len(spill.read_text().splitlines()) == 3
    assert _dead_letters(tmp_path) == []

    up = PredictionLog(pg_url, tmp_path / "spill", flush_interval_s=60)
    up.close()
    assert _request_ids(pg_url) == {"o-before", "o-after"}
    stats = up.stats()
    assert (stats["replayed"], stats["written"], stats["dead_lettered"]) == (3, 2, 1)
    assert "character varying(64)" in stats["last_dead_letter"]
    assert [r["request_id"] for r in _dead_letters(tmp_path)] == ["o-long"]
    assert _spill_files(tmp_path) == []


def test_an_outage_in_the_middle_of_a_row_by_row_pass_spills_the_rest(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing row and the ones after it spill (they are not dead-lettered: the outage is
    not theirs); what was done before stays done."""
    nothing_listening = (
        sa.make_url(pg_url).set(port=free_port()).render_as_string(hide_password=False)
    )
    log = PredictionLog(pg_url, tmp_path / "spill", flush_interval_s=60)
    live_engine = log.warehouse.engine
    insert = log._insert
    calls: list[int] = []

    def insert_then_go_down(rows: list[Any], copy: bool = True) -> None:
        calls.append(len(rows))
        if len(calls) == 4:  # the batch, row 0, row 1 (rejected); before row 2: gone
            log.warehouse.engine = sa.create_engine(nothing_listening)
        insert(rows, copy)

    monkeypatch.setattr(log, "_insert", insert_then_go_down)
    log.submit(
        [
            _row("m-0"),
            _row("m-long", symbol="S" * 65),
            _row("m-2", row_index=2),
            _row("m-3", row_index=3),
        ]
    )
    log.flush()
    assert calls == [4, 1, 1, 1]
    stats = log.stats()
    assert (stats["written"], stats["dead_lettered"], stats["spilled"]) == (1, 1, 2)
    assert stats["db_ok"] is False
    assert _request_ids(pg_url) == {"m-0"}
    assert [r["request_id"] for r in _dead_letters(tmp_path)] == ["m-long"]
    (spill,) = _spill_files(tmp_path)
    assert [json.loads(line)[0] for line in spill.read_text().splitlines()] == ["m-2", "m-3"]
    log.close()
    live_engine.dispose()

    again = PredictionLog(pg_url, tmp_path / "spill", flush_interval_s=60)
    again.close()
    assert _request_ids(pg_url) == {"m-0", "m-2", "m-3"}
    assert again.stats()["dead_lettered"] == 0 and _spill_files(tmp_path) == []


def test_a_locked_sqlite_database_spills_rather_than_dead_letters(tmp_path: Path) -> None:
    """A SELECT needs no lock: the probe must take the write lock to see that the database
    cannot take rows, or every row of the batch would be dead-lettered."""
    db = tmp_path / "wh.db"
    url = f"sqlite:///{db}"
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=60)
    # After the warehouse's own pragmas: wait 0.1 s for a lock, not 30.
    sa.event.listen(
        log.warehouse.engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=100")
    )
    log.submit([_row("l-0")])
    log.flush()
    assert log.written == 1

    blocker = sqlite3.connect(db)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        log.submit([_row("l-1"), _row("l-nan", probability=float("nan")), _row("l-2")])
        log.flush()
        stats = log.stats()
        assert (stats["written"], stats["spilled"], stats["dead_lettered"]) == (1, 3, 0)
        assert stats["db_ok"] is False
    finally:
        blocker.rollback()
        blocker.close()

    log.close()  # the lock is gone: the spill is replayed
    assert _request_ids(url) == {"l-0", "l-1", "l-2"}
    stats = log.stats()
    assert (stats["written"], stats["dead_lettered"], stats["replayed"]) == (3, 1, 3)
    assert [r["request_id"] for r in _dead_letters(tmp_path)] == ["l-nan"]
    assert _spill_files(tmp_path) == []


def test_the_client_reports_dead_lettered_rows_from_its_writer(pg_url: str, tmp_path: Path) -> None:
    """Through the pipe: a lone surrogate cannot go as orjson; the standard library writes
    the batch and the writer dead-letters that row only."""
    client = PredictionLogClient(pg_url, tmp_path / "spill", flush_interval_s=0.02)
    client.submit(
        [
            PredictionRow(*_row("c-before")),
            PredictionRow(*_row("c-long", symbol="S" * 65)),
            PredictionRow(*_row("c-surrogate", symbol="\ud800")),
            PredictionRow(*_row("c-after", row_index=1)),
        ]
    )
    deadline = time.time() + 30
    while client.dead_lettered < 2 and time.time() < deadline:  # stats come once a second
        time.sleep(0.1)
    assert client.dead_lettered == 2
    assert client.writer_stats["last_dead_letter"]
    client.close()
    assert client.restarts == 0
    assert _request_ids(pg_url) == {"c-before", "c-after"}
    errors = {r["request_id"]: r["error"] for r in _dead_letters(tmp_path)}
    assert set(errors) == {"c-long", "c-surrogate"}
    assert "character varying(64)" in errors["c-long"]
    assert "UnicodeEncodeError" in errors["c-surrogate"]


def test_an_unreadable_batch_from_the_server_is_dead_lettered(pg_url: str, tmp_path: Path) -> None:
    """The writer process's own input: a line nothing can read is kept as raw text in the
    dead-letter file; a line only the standard library reads (a NaN: what the server sends
    when orjson refuses a row) goes in, its bad row dead-lettered; the lines around them are
    written."""
    config = {
        "warehouse_url": pg_url,
        "spill_dir": str(tmp_path / "spill"),
        "batch_size": 500,
        "flush_interval_s": 0.05,
    }
    lines = [
        json.dumps(config),
        json.dumps([_row("w-before")], default=str),
        '[["w-cut", 0, "direction_1h"',
        json.dumps(
            [_row("w-nan", probability=float("nan")), _row("w-after", row_index=1)], default=str
        ),
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "signalops.serving.predlog_writer"],
        input="\n".join(lines) + "\n",
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert _request_ids(pg_url) == {"w-before", "w-after"}
    cut, nan = _dead_letters(tmp_path)
    assert cut["error"].startswith("unreadable batch from the server: JSONDecodeError")
    assert cut["raw"] == '[["w-cut", 0, "direction_1h"'
    assert nan["request_id"] == "w-nan" and "non-finite number nan" in nan["error"]
    assert "'dead_lettered': 2" in proc.stderr  # the writer's last word: its figures


@pytest.mark.parametrize("backend", BOTH)
def test_a_good_batch_is_still_one_insert(
    backend: str, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _url(backend, pg_url, tmp_path)
    log = PredictionLog(url, tmp_path / "spill", batch_size=500, flush_interval_s=60)
    insert = log._insert
    calls: list[tuple[int, bool]] = []

    def spy(rows: list[Any], copy: bool = True) -> None:
        calls.append((len(rows), copy))
        insert(rows, copy)

    monkeypatch.setattr(log, "_insert", spy)
    log.submit([_row(f"g{i}") for i in range(500)])
    log.close()
    assert calls == [(500, True)]
    assert len(_request_ids(url)) == 500
