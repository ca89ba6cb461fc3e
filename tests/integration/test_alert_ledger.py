"""The alert ledger on a real PostgreSQL and on SQLite, against a local Slack-compatible
endpoint: an alert goes out once per dedup window however many processes raise it at once,
a failed send is recorded as failed and sent again by the next occurrence, and an
unreachable warehouse never costs the alert."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from signalops.alerts import Alert, AlertError
from signalops.alerts.ledger import deliver
from signalops.config import Settings
from tests.conftest import make_settings
from tests.slack_recorder import SlackRecorder, slack_recorder

pytestmark = pytest.mark.integration

ALERT = Alert("signalops sidecar: direction_1h v7 not loaded", "spec mismatch", "error")
HOUR = timedelta(hours=1)


@pytest.fixture(params=["postgres", "sqlite"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def slack() -> Iterator[SlackRecorder]:
    with slack_recorder() as recorder:
        yield recorder


def _settings(tmp_path: Path, warehouse_url: str, slack: SlackRecorder) -> Settings:
    return make_settings(
        tmp_path,
        SIGNALOPS_WAREHOUSE__URL=warehouse_url,
        SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL=f"{slack.url}/hook",
    )


def _rows(url: str) -> list:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM alerts ORDER BY dedup_key")).fetchall()
    engine.dispose()
    return list(rows)


def test_once_per_window_failed_sends_retried(
    warehouse_url: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    settings = _settings(tmp_path, warehouse_url, slack)
    assert deliver(ALERT, settings, kind="model_load_failed", key="v7", window=HOUR) == "sent"
    assert deliver(ALERT, settings, kind="model_load_failed", key="v7", window=HOUR) == (
        "suppressed"
    )
    assert len(slack.requests) == 1
    [row] = _rows(warehouse_url)
    assert (row.dedup_key, row.status, row.occurrences) == (
        "model_load_failed:v7",
        "suppressed",
        2,
    )
    assert row.last_sent is not None and row.channel == "slack-webhook"

    # Slack fails: recorded as failed, raised, and the next occurrence sends it
    slack.status = 500
    with pytest.raises(AlertError, match="500"):
        deliver(ALERT, settings, kind="model_load_failed", key="v8", window=HOUR)
    failed = {r.dedup_key: r for r in _rows(warehouse_url)}["model_load_failed:v8"]
    assert failed.status == "failed" and failed.last_sent is None and "500" in failed.error
    slack.status = 200
    assert deliver(ALERT, settings, kind="model_load_failed", key="v8", window=HOUR) == "sent"
    sent = {r.dedup_key: r for r in _rows(warehouse_url)}["model_load_failed:v8"]
    assert sent.status == "sent" and sent.occurrences == 2 and sent.error is None

    # a window of zero: every occurrence goes out
    for _ in range(2):
        assert deliver(ALERT, settings, kind="k", key="z", window=timedelta(0)) == "sent"


def test_raised_at_once_by_many_workers_it_is_sent_once(
    warehouse_url: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    settings = _settings(tmp_path, warehouse_url, slack)
    deliver(ALERT, settings, kind="warm", key="up", window=HOUR)  # the table exists
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(
            pool.map(
                lambda _: deliver(ALERT, settings, kind="model_load_failed", key="v9", window=HOUR),
                range(8),
            )
        )
    assert sorted(outcomes) == ["sent"] + ["suppressed"] * 7
    assert len(slack.requests) == 2  # the warm-up and one of the eight
    row = {r.dedup_key: r for r in _rows(warehouse_url)}["model_load_failed:v9"]
    assert row.occurrences == 8


def test_an_unreachable_warehouse_does_not_cost_the_alert(
    tmp_path: Path, slack: SlackRecorder
) -> None:
    settings = _settings(tmp_path, "postgresql+psycopg2://postgres@127.0.0.1:1/nowhere", slack)
    assert deliver(ALERT, settings, kind="k", key="x", window=HOUR) == "sent"
    assert len(slack.requests) == 1
