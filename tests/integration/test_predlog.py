"""The prediction log's two halves against a real PostgreSQL (and SQLite): the writer's COPY
path and its conflict fallback, the client that ships rows to a writer process, a writer
that dies, and a server that dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from signalops.serving.predlog import COLUMNS, PredictionLogClient, PredictionRow
from signalops.serving.predlog_writer import PredictionLog

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _row(request_id: str, **over: Any) -> list[Any]:
    values = {
        "request_id": request_id,
        "row_index": 0,
        "signal_name": "direction_1h",
        "role": "champion",
        "ts": datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC),
        "symbol": "AAA",
        "model_version": "3",
        "features_hash": "00ff00ff00ff00ff",
        "features_ts": datetime(2026, 11, 27, 11, 0, tzinfo=UTC),
        "probability": 0.6180339887,
        "signal": "BUY",
        "risk_decision": "ok",
        "latency_ms": 1.25,
        **over,
    }
    return [values[c] for c in COLUMNS]


def _count(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one())
    except sa.exc.ProgrammingError:  # no table yet
        return 0
    except sa.exc.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        engine.dispose()


def _wait_for(url: str, expected: int, timeout: float = 30) -> int:
    deadline = time.time() + timeout
    n = _count(url)
    while n < expected and time.time() < deadline:
        time.sleep(0.1)
        n = _count(url)
    return n


def test_copy_round_trips_awkward_text_and_replays_never_duplicate(
    pg_url: str, tmp_path: Path
) -> None:
    awkward = "tab\there\\back\nline\r'quote\"é"
    rows = [
        _row(awkward, symbol=None, features_ts=None, risk_decision="blocked: 'x'\t\\N"),
        _row("plain", row_index=1, symbol="", probability=0.0),
    ]
    log = PredictionLog(pg_url, tmp_path / "spill", flush_interval_s=0.05)
    log.submit([list(r) for r in rows])
    log.close()
    assert log.written == 2 and log.spilled == 0
    # The same rows again (a replay after a partial failure): COPY collides, the batch goes
    # again as INSERT ... ON CONFLICT DO NOTHING.
    again = PredictionLog(pg_url, tmp_path / "spill", flush_interval_s=0.05)
    again.submit([list(r) for r in rows] + [_row("new")])
    again.close()
    assert again.spilled == 0
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        got = {
            r.request_id: r
            for r in conn.execute(sa.text("SELECT * FROM predictions ORDER BY request_id"))
        }
    engine.dispose()
    assert sorted(got) == sorted([awkward, "plain", "new"])
    first = got[awkward]
    assert first.symbol is None and first.features_ts is None
    assert first.risk_decision == "blocked: 'x'\t\\N"
    assert first.ts == datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
    assert got["plain"].symbol == "" and got["plain"].probability == 0.0
    assert got["new"].probability == pytest.approx(0.6180339887, abs=1e-12)


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_client_ships_rows_to_its_writer_and_close_flushes(
    backend: str, pg_url: str, tmp_path: Path
) -> None:
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'wh.db'}"
    client = PredictionLogClient(url, tmp_path / "spill", batch_size=200, flush_interval_s=0.02)
    for i in range(1000):
        client.submit([PredictionRow(*_row(f"r{i}"))])
    client.close()
    assert _count(url) == 1000
    assert client.restarts == 0


def test_a_dead_writer_is_replaced(pg_url: str, tmp_path: Path) -> None:
    client = PredictionLogClient(pg_url, tmp_path / "spill", flush_interval_s=0.02)
    client.submit([PredictionRow(*_row(f"a{i}")) for i in range(100)])
    assert _wait_for(pg_url, 100) == 100
    writer = client._writer
    assert writer is not None
    writer.kill()
    writer.wait(timeout=10)
    client.submit([PredictionRow(*_row(f"b{i}")) for i in range(100)])
    client.close()
    assert client.restarts == 1
    assert _count(pg_url) == 200


def test_rows_shipped_before_the_server_dies_are_written(pg_url: str, tmp_path: Path) -> None:
    """SIGKILL the server process: its writer reads end-of-file and flushes what it got."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO / "tests" / "integration")!r})
        from test_predlog import _row
        from signalops.serving.predlog import PredictionLogClient, PredictionRow
        client = PredictionLogClient({pg_url!r}, __import__("pathlib").Path({str(tmp_path)!r}),
                                     flush_interval_s=60)
        client.submit([PredictionRow(*_row(f"k{{i}}")) for i in range(500)])
        client.send()  # shipped down the pipe, not yet written (the writer batches)
        print(client._writer.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    writer_pid = int(proc.stdout.split()[0])
    assert _wait_for(pg_url, 500) == 500
    deadline = time.time() + 30
    while time.time() < deadline:  # and then it exits on its own
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"writer {writer_pid} still running after its server died")
