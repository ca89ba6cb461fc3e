"""The sidecar's failed-scoring counts: what the canary's error-rate guard reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from signalops.serving.failures import FailureCounts
from signalops.warehouse import Warehouse, scoring_errors


def test_counts_per_version_are_written_idempotently_and_survive_an_outage(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    counts = FailureCounts(url, start=False)
    counts.record("sig", "2", "challenger", "input", 3)
    counts.record("sig", "2", "challenger", "predict")
    counts.record("sig", "1", "champion", "predict", 2)
    assert counts.flush() == 3
    assert counts.flush() == 0  # nothing changed: nothing written
    counts.record("sig", "2", "challenger", "input", 2)
    assert counts.flush() == 1  # the minute's count replaces the one sent before
    since = datetime.now(UTC) - timedelta(minutes=5)
    with Warehouse(url) as wh, wh.connect() as conn:
        assert scoring_errors.totals(conn, "sig", since) == {"2": 6, "1": 2}
        assert scoring_errors.by_kind(conn, "sig", "2", since) == {"input": 5, "predict": 1}
        assert scoring_errors.totals(conn, "other", since) == {}

    # A second worker's counts add up with the first's; a database that is down keeps them.
    down = FailureCounts(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}", start=False)
    down.warehouse_url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    down.record("sig", "2", "challenger", "predict", 4)
    assert down.flush() == 0
    down.warehouse_url = url
    assert down.flush() == 1
    down.close()
    counts.close()
    with Warehouse(url) as wh, wh.connect() as conn:
        assert scoring_errors.totals(conn, "sig", since) == {"2": 10, "1": 2}
