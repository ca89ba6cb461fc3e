"""The alert ledger on a real PostgreSQL and on SQLite, against a local Slack-compatible
endpoint: an alert goes out once per dedup window however many processes raise it at once,
a failed send is recorded as failed and sent again by the next occurrence, and an
unreachable warehouse never costs the alert."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from signalops.alerts import Alert, AlertError
from signalops.alerts.dag_runs import run_finished
from signalops.alerts.ledger import deliver, notify, resolve
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


def test_per_channel_rate_limit_defers_never_drops(
    warehouse_url: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    """Over ``alerts.max_per_minute`` on a channel, an alert is recorded as rate_limited,
    not sent and not marked sent: its next occurrence, once the minute has passed, goes out."""
    settings = make_settings(
        tmp_path,
        SIGNALOPS_WAREHOUSE__URL=warehouse_url,
        SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL=f"{slack.url}/hook",
        SIGNALOPS_ALERTS__MAX_PER_MINUTE="3",
    )
    outcomes = [deliver(ALERT, settings, kind="k", key=f"s{i}", window=HOUR) for i in range(5)]
    assert outcomes == ["sent", "sent", "sent", "rate_limited", "rate_limited"]
    assert len(slack.requests) == 3
    limited = {r.dedup_key: r for r in _rows(warehouse_url)}["k:s3"]
    assert limited.status == "rate_limited" and limited.last_sent is None
    assert "over 3 alerts/min on slack-webhook" in limited.error
    engine = sa.create_engine(warehouse_url)  # a minute later
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE alerts SET last_sent = :t WHERE last_sent IS NOT NULL"),
            {"t": datetime.now(UTC) - timedelta(minutes=2)},
        )
    engine.dispose()
    assert deliver(ALERT, settings, kind="k", key="s3", window=HOUR) == "sent"
    assert len(slack.requests) == 4


def test_a_resolved_condition_alerts_again_at_once(
    warehouse_url: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    settings = _settings(tmp_path, warehouse_url, slack)
    day = timedelta(days=1)
    assert deliver(ALERT, settings, kind="risk_breaker_tripped", key="d", window=day) == "sent"
    assert deliver(ALERT, settings, kind="risk_breaker_tripped", key="d", window=day) == (
        "suppressed"
    )
    resolve(settings, kind="risk_breaker_tripped", key="d")
    assert {r.dedup_key: r.status for r in _rows(warehouse_url)} == {
        "risk_breaker_tripped:d": "resolved"
    }
    assert deliver(ALERT, settings, kind="risk_breaker_tripped", key="d", window=day) == "sent"
    assert len(slack.requests) == 2


def test_notify_never_raises_and_links_to_the_signal_page(
    warehouse_url: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    """``notify`` is ``deliver`` for callers that must go on: a failing Slack is recorded
    (failed, so the next occurrence sends) and logged, not raised. An alert without a link
    links to its signal's page."""
    settings = _settings(tmp_path, warehouse_url, slack)
    slack.status = 500
    assert notify(ALERT, settings, kind="k", key="n", window=HOUR) is None
    assert {r.dedup_key: r.status for r in _rows(warehouse_url)} == {"k:n": "failed"}
    slack.status = 200
    assert notify(ALERT, settings, kind="k", key="n", window=HOUR) == "sent"
    body = json.dumps(slack.requests[-1].body)
    assert f"<{settings.signal_page_url()}|details>" in body
    assert settings.signal_page_url() == "http://localhost:8080/signalops/signals/direction_1h"


def test_dag_paused_alert_once_after_the_limit(
    warehouse_url: str, tmp_path: Path, slack: SlackRecorder
) -> None:
    """The DAG-level callbacks' record: the ``limit``-th failed run in a row (Airflow's rule
    for pausing the DAG) alerts once, linked to that run; a run recorded twice counts once;
    a success starts the count again."""
    settings = _settings(tmp_path, warehouse_url, slack)

    def finished(run: str, failed: bool) -> object:
        return run_finished(settings, "market_data", run, failed=failed, limit=3)

    assert finished("r0", failed=False) is None
    assert finished("r1", failed=True) is None
    assert finished("r2", failed=True) is None
    assert finished("r2", failed=True) is None  # the same run again: still two
    assert slack.requests == []
    assert finished("r3", failed=True) == "sent"
    [paused] = slack.requests
    body = json.dumps(paused.body)
    assert "DAG market_data paused after 3 failed runs in a row" in body
    assert "http://localhost:8080/dags/market_data/runs/r3|details" in body
    assert finished("r3", failed=True) == "suppressed"  # a callback delivered twice
    assert finished("r4", failed=False) is None  # unpaused and fixed
    assert finished("r5", failed=True) is None
    assert run_finished(settings, "other", "r1", failed=True, limit=0) is None  # no pausing
    assert len(slack.requests) == 1
