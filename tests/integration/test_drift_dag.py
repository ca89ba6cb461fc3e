"""The drift monitor in real Airflow runs against a registered champion (real MLflow):
a window with no shift gives severity none and no alert; the synthetic source's injected
shift gives high severity, one Slack alert, the drift_detected Asset, an Evidently report
and an MLflow run. While Slack fails, the window stays not alerted and nothing is emitted,
so the next check alerts once Slack is back. Checking the same window again rewrites its
rows and does not alert or emit again. The window is each symbol's last
`drift.window_bars` bars, judged against the profile's null critical values. A window with
too few rows is skipped with the reason."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from signalops.config import Settings, load_settings
from signalops.drift.monitor import run_check
from signalops.registry import Registry
from signalops.training import retrain as steps
from tests.conftest import TRAIN_END, TRAIN_START, build_lake
from tests.integration.test_airflow_dags import _stack
from tests.slack_recorder import slack_recorder

pytestmark = pytest.mark.integration

SHIFT_AT = TRAIN_END + timedelta(days=3)
CALM_END = SHIFT_AT  # [TRAIN_END, SHIFT_AT): the same market as the training data
SHIFTED_END = SHIFT_AT + timedelta(days=3)  # [SHIFT_AT, +3 d): volatility x2.5, volume x3


def _checks(settings: Settings) -> list:
    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM drift_checks ORDER BY window_end")).fetchall()
    engine.dispose()
    return list(rows)


def test_drift_monitor_calm_then_shifted(tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("airflow-drift")
    with slack_recorder() as slack:
        stack = _stack(tmp, f"sqlite:///{tmp / 'airflow.db'}", None)
        stack.env.update(
            # A stationary synthetic market (one regime) with eight symbols, so that a 72 h
            # window is a fair sample; the source's shift starts three days after training.
            SIGNALOPS_MARKET__SYMBOLS="A1,A2,A3,A4,A5,A6,A7,A8",
            SIGNALOPS_MARKET__SYNTHETIC__REGIME_BARS="1000000",
            SIGNALOPS_MARKET__SYNTHETIC__SHIFT_AT=SHIFT_AT.isoformat(),
            SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES="200",
            SIGNALOPS_DRIFT__WINDOW_BARS="864",  # each symbol's last 72 h of 5-minute bars
            SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL=f"{slack.url}/hooks/drift",
            AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY="1",  # the failing alert's retries
        )
        settings = load_settings(env=stack.env, config_file=None)
        build_lake(settings, TRAIN_START, SHIFTED_END)
        registered = steps.run_all(
            settings, steps.plan_request(settings, {"end": TRAIN_END.isoformat()}, run_key="v1")
        )
        assert "register" in registered, {k: v.summary for k, v in registered.items()}

        stack.dags_test("drift_monitor", CALM_END.isoformat())
        # Slack fails: the alert task fails (and its retries); the window is not marked
        # alerted and the retrain trigger is not emitted, so nothing is lost ...
        slack.status = 500
        stack.dags_test("drift_monitor", SHIFTED_END.isoformat(), check=False)
        assert [r.alerted for r in _checks(settings)] == [False, False]
        assert stack.asset_events("signalops/drift_detected") == []
        assert any("HIGH drift" in json.dumps(r.body) for r in slack.requests)  # it was tried
        # ... the next check of the same drift, with Slack back, alerts once and triggers
        slack.status = 200
        slack.requests.clear()
        stack.dags_test("drift_monitor", SHIFTED_END.isoformat())
        stack.dags_test("drift_monitor", SHIFTED_END.isoformat())  # the same window again

        engine = sa.create_engine(settings.warehouse_url)
        with engine.connect() as conn:
            checks = conn.execute(
                sa.text("SELECT * FROM drift_checks ORDER BY window_end")
            ).fetchall()
            features = conn.execute(
                sa.text("SELECT window_end, count(*) FROM drift_features GROUP BY window_end")
            ).fetchall()
        engine.dispose()
        assert len(checks) == 2  # one row per window: the rerun replaced its own
        calm, shifted = checks
        assert calm.severity == "none" and not calm.alerted and calm.rows > 6000
        # judged against the null critical values retrain put in the profile
        assert calm.calibrated and shifted.calibrated and calm.window_bars == 864
        assert shifted.severity == "high" and shifted.alerted
        assert shifted.share_drifted >= 0.5 and shifted.prediction_psi >= 0.2
        assert [n for _, n in features] == [25, 25]
        assert Path(shifted.report_path).is_file()
        html = Path(shifted.report_path).read_text()
        assert "<html" in html[:500].lower() and "atr_14" in html and "Drift" in html

        alerts = [r for r in slack.requests if "drift" in json.dumps(r.body).lower()]
        assert len(alerts) == 1, [r.body for r in slack.requests]  # not repeated
        body = json.dumps(alerts[0].body)
        assert "HIGH drift" in body
        # linked to the signal's page and the run by URL, never to a file on the worker
        assert f"{settings.signal_page_url()}|details" in body
        assert "/dags/drift_monitor/runs/" in body and str(settings.state_dir) not in body
        with engine.connect() as conn:
            ledger = conn.execute(
                sa.text("SELECT status, occurrences FROM alerts WHERE kind = 'drift'")
            ).fetchall()
            runs = conn.execute(
                sa.text("SELECT state FROM dag_runs WHERE dag_id = 'drift_monitor'")
            ).scalars()
            run_states = sorted(runs)
        engine.dispose()
        # the failed send was recorded, the retry in the next run sent it, the rerun of the
        # same window raised no alert (the check knew it was alerted)
        assert [r.status for r in ledger] == ["sent"] and ledger[0].occurrences >= 2
        assert run_states == ["failed", "success", "success", "success"]  # DAG callbacks
        events = stack.asset_events("signalops/drift_detected")
        assert len(events) == 1 and events[0]["severity"] == "high"
        assert events[0]["end"] == SHIFTED_END.isoformat()

        registry = Registry(settings)
        runs = registry.client.search_runs([registry.experiment_id("drift")])
        assert len(runs) == 2  # one per checked window, reused by the rerun
        shifted_run = next(r for r in runs if r.data.tags["signalops.severity"] == "high")
        assert shifted_run.data.metrics["share_drifted"] == pytest.approx(shifted.share_drifted)

        # Too few rows in the window: the last 864 bars are read from the calendar span that
        # holds them (3 days + room: about 14 days), and the features end 30 days earlier.
        check = run_check(settings, SHIFTED_END + timedelta(days=30))
        assert check.status == "skipped" and "too few to judge" in check.reason
