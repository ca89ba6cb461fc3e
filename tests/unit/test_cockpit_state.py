"""The Signals page's state reader on a small SQLite warehouse (no Airflow, no MLflow), and
the app's routes with a stand-in for Airflow's authentication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from signalops.cockpit import state, state_registry, state_warehouse
from signalops.cockpit.app import create_app
from signalops.cockpit.auth import LoginRequired
from signalops.config import Settings
from signalops.rollout.outcomes import live_metrics
from signalops.warehouse import (
    Warehouse,
    alerts_table,
    drift_checks_table,
    drift_features_table,
    outcomes_table,
    predictions_table,
    rollouts_table,
)
from tests.conftest import make_settings

SIGNAL = "direction_1h"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    return make_settings(tmp_path, SIGNALOPS_LINKS__AIRFLOW_URL="http://airflow.test")


def _fill(settings: Settings) -> None:
    report = settings.state_dir.resolve() / "drift" / "reports" / SIGNAL / "v1_a_b.html"
    report.parent.mkdir(parents=True)
    report.write_text("<html>evidently</html>")
    rng = np.random.default_rng(0)
    with Warehouse(settings.warehouse_url) as wh, wh.engine.begin() as conn:
        wh.create_all()
        conn.execute(
            rollouts_table.insert(),
            [
                {
                    "id": "r1",
                    "signal_name": SIGNAL,
                    "champion_version": "1",
                    "challenger_version": "2",
                    "step": 2,
                    "weight": 0.1,
                    "status": "active",
                    "reason": "guards hold",
                    "started_at": NOW - timedelta(hours=3),
                    "step_started_at": NOW - timedelta(hours=1),
                    "updated_at": NOW,
                    "history": [
                        {
                            "at": "t0",
                            "event": "start",
                            "status": "active",
                            "step": 0,
                            "weight": 0.0,
                            "reason": "new challenger",
                        },
                        {
                            "at": "t1",
                            "event": "advance",
                            "status": "active",
                            "step": 2,
                            "weight": 0.1,
                            "reason": "guards hold",
                            "numbers": {"latency_ratio": 1.1, "score_psi": 0.02},
                        },
                    ],
                }
            ],
        )
        checks, features = [], []
        for i, severity in enumerate(["none", "low", "high"]):
            end = NOW - timedelta(hours=2 - i)
            key = {
                "signal_name": SIGNAL,
                "model_version": "1",
                "window_start": end - timedelta(days=1),
                "window_end": end,
            }
            checks.append(
                {
                    **key,
                    "window_bars": 288,
                    "checked_at": end,
                    "rows": 800,
                    "calibrated": True,
                    "severity": severity,
                    "share_drifted": i / 4,
                    "prediction_psi": 0.01 * i,
                    "accuracy": None,
                    "holdout_accuracy": 0.55,
                    "matured_rows": 0,
                    "reasons": [],
                    "recommendations": [],
                    "alerted": False,
                    "report_path": str(report) if i == 2 else None,
                }
            )
            for j, name in enumerate(["ret_1", "vol_12", "rsi_14"]):
                features.append(
                    {
                        **key,
                        "feature": name,
                        "psi": 0.1 * j * i,
                        "ks_statistic": 0.1,
                        "ks_p_value": 0.5,
                        "wasserstein": 0.1,
                        "psi_critical": 0.15,
                        "ks_critical": None,
                        "wasserstein_critical": None,
                        "severity": "none",
                        "drifted": j < i,
                    }
                )
        conn.execute(drift_checks_table.insert(), checks)
        conn.execute(drift_features_table.insert(), features)
        preds, outs = [], []
        for i in range(40):
            version, role = ("1", "champion") if i % 2 else ("2", "challenger")
            p = float(rng.uniform(0.3, 0.7))
            ts = NOW - timedelta(minutes=5 * i)
            row = {"request_id": f"q{i}", "row_index": 0, "signal_name": SIGNAL, "role": role}
            preds.append(
                {
                    **row,
                    "ts": ts,
                    "symbol": "AAA",
                    "model_version": version,
                    "features_hash": "h",
                    "features_ts": ts,
                    "probability": p,
                    "signal": "BUY" if p > 0.55 else "SELL" if p < 0.45 else "HOLD",
                    "risk_decision": "ok",
                    "latency_ms": float(i),
                }
            )
            outs.append(
                {
                    **row,
                    "model_version": version,
                    "symbol": "AAA",
                    "ts": ts,
                    "features_ts": ts,
                    "probability": p,
                    "signal": preds[-1]["signal"],
                    "label_up": i % 3 == 0,
                    "label_return": 0.001 * (1 if i % 3 == 0 else -1),
                    "matured_at": ts,
                    "joined_at": NOW,
                }
            )
        conn.execute(predictions_table.insert(), preds)
        conn.execute(outcomes_table.insert(), outs)
        conn.execute(
            alerts_table.insert(),
            [
                {
                    "dedup_key": f"drift:{SIGNAL}:x",
                    "kind": "drift",
                    "severity": "warning",
                    "title": f"signalops: drift on {SIGNAL}",
                    "status": "sent",
                    "occurrences": 2,
                    "first_seen": NOW,
                    "last_seen": NOW,
                    "last_sent": NOW,
                    "claimed_at": None,
                    "channel": "webhook",
                    "error": None,
                },
                {
                    "dedup_key": "drift:other:x",
                    "kind": "drift",
                    "severity": "warning",
                    "title": "signalops: drift on other",
                    "status": "sent",
                    "occurrences": 1,
                    "first_seen": NOW,
                    "last_seen": NOW,
                    "last_sent": NOW,
                    "claimed_at": None,
                    "channel": "webhook",
                    "error": None,
                },
            ],
        )


def test_empty_deployment_reads_nothing_and_creates_nothing(settings: Settings) -> None:
    found = state.signal_state(settings, SIGNAL)
    assert found.empty
    assert any("no warehouse" in n for n in found.notes)
    assert any("no MLflow store" in n for n in found.notes)
    assert not settings.state_dir.exists()  # reading never creates the databases


def test_empty_tables_read_as_nothing(settings: Settings) -> None:
    with Warehouse(settings.warehouse_url) as wh:
        wh.create_all()
    found = state.signal_state(settings, SIGNAL, registry=False)
    assert found.empty and found.notes == []


def test_filled_warehouse(settings: Settings) -> None:
    _fill(settings)
    found = state.signal_state(settings, SIGNAL, registry=False)
    rollout = found.rollout
    assert rollout is not None
    assert (rollout["step"], rollout["weight"], rollout["status"]) == (2, 0.1, "active")
    assert rollout["guards"] == {"latency_ratio": 1.1, "score_psi": 0.02}
    assert [h["event"] for h in rollout["history"]] == ["start", "advance"]

    assert [d["severity"] for d in found.drift] == ["none", "low", "high"]  # oldest first
    assert found.drift[-1]["drifted_features"] == ["ret_1", "vol_12"]
    assert found.drifted_features[0]["drifted"] and len(found.drifted_features) == 3
    url = found.drift[-1]["report_url"]
    assert (
        url == f"http://airflow.test/signalops/artifacts/state/drift/reports/{SIGNAL}/v1_a_b.html"
    )
    assert found.links["newest drift report (Evidently)"] == url

    assert [a["title"] for a in found.alerts] == [f"signalops: drift on {SIGNAL}"]

    # live metrics are the canary's own figures, per version
    by_version = {m["version"]: m for m in found.live}
    assert set(by_version) == {"1", "2"}
    with Warehouse(settings.warehouse_url) as wh:
        expected = live_metrics(
            settings, wh, SIGNAL, "2", ("champion", "challenger", "shadow"),
            NOW - state_warehouse.LIVE_WINDOW, NOW + timedelta(minutes=1),
        ).as_dict()  # fmt: skip
    assert by_version["2"]["predictions"] == expected["predictions"] == 20
    assert by_version["2"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert by_version["2"]["log_loss"] == pytest.approx(expected["log_loss"])
    assert by_version["2"]["latency_p95_ms"] == pytest.approx(expected["latency_p95_ms"])


def test_guard_checks_put_each_value_next_to_its_limit(settings: Settings) -> None:
    cfg = settings.rollout
    version = {"predictions": cfg.min_predictions, "outcomes": cfg.min_outcomes - 1}
    numbers = {
        "champion": {**version, "latency_p95_ms": 4.0},
        "challenger": {**version, "latency_p95_ms": 4.0 * cfg.max_latency_ratio + 5},
        "score_psi": cfg.max_score_psi / 2,
        "step_minutes": 1.0,
        "error_rate_excess": cfg.max_error_rate_excess / 2,
    }
    checks = {g["guard"]: g for g in state_warehouse.guard_checks(numbers, cfg)}
    assert {k: g["status"] for k, g in checks.items()} == {
        "challenger predictions at the step": "ok",
        "error rate over the champion's": "ok",
        "p(error rate worse)": "not judged",
        "challenger latency p95 (ms)": "breach",
        "score PSI vs champion": "ok",
        "signal agreement (shadow step)": "not judged",
        "matured outcomes (fewer of the two)": "waiting",
        "p(live accuracy worse)": "not judged",
        "p(live log loss worse)": "not judged",
        "minutes at the step": "waiting",
    }
    latency = checks["challenger latency p95 (ms)"]
    assert latency["limit"] == f"<= {4.0 * cfg.max_latency_ratio + cfg.latency_slack_ms:g}"
    assert all(g["status"] == "not judged" for g in state_warehouse.guard_checks({}, cfg))


def test_signal_names_include_the_warehouse(settings: Settings) -> None:
    _fill(settings)
    with Warehouse(settings.warehouse_url) as wh, wh.engine.begin() as conn:
        conn.execute(
            rollouts_table.update().where(rollouts_table.c.id == "r1").values(signal_name="x2")
        )
    wh = state_warehouse.open_warehouse(settings)
    assert wh is not None
    assert state_warehouse.signal_names(settings, wh) == [SIGNAL, "x2"]
    wh.dispose()


def test_evaluation_summary_lists_every_rule() -> None:
    report: dict[str, Any] = {
        "primary_metric": "roc_auc",
        "decision": {
            "passed": False,
            "action": "rejected",
            "reasons": ["net_sharpe: ..."],
            "checks": {
                "net_sharpe": {"status": "fail", "passed": False, "detail": "net Sharpe -1",
                               "threshold": 0.0, "setting": "evaluation.min_sharpe",
                               "numbers": {"sharpe": -1.0}},
                "not_worse_than_champion": {"status": "n/a", "passed": None, "detail": "none",
                                            "threshold": 0.01, "setting": None, "numbers": {}},
            },
        },
        "models": {"challenger": {"version": None, "ml": {"roc_auc": 0.6}, "trading": {}}},
    }  # fmt: skip
    summary = state_registry.evaluation_summary(report)
    assert summary is not None
    assert [r["name"] for r in summary["rules"]] == ["net_sharpe", "not_worse_than_champion"]
    assert summary["rules"][0]["numbers"] == {"sharpe": -1.0}
    assert summary["models"]["challenger"]["roc_auc"] == 0.6
    assert state_registry.evaluation_summary(None) is None


# --- the app, with a stand-in for Airflow's get_user -----------------------------------


def _client(settings: Settings) -> TestClient:
    async def authenticate(request: Request) -> str:
        if request.headers.get("authorization") != "Bearer good":
            raise LoginRequired(401, "Not authenticated")
        return "admin"

    parent = FastAPI()  # as the api-server mounts a plugin's app
    parent.mount("/signalops", create_app(lambda: settings, authenticate))
    return TestClient(parent, base_url="http://t/signalops", follow_redirects=False)


AUTH = {"Authorization": "Bearer good"}


def test_app_refuses_without_a_user(settings: Settings) -> None:
    _fill(settings)
    client = _client(settings)
    page = client.get("/signals/direction_1h")
    assert page.status_code == 307 and "/auth/login" in page.headers["location"]
    assert "rollout" not in page.text
    for path in ("/api/signals/direction_1h", "/api/signals", "/artifacts/state/drift/x.html"):
        response = client.get(path)
        assert response.status_code == 401, path
        assert response.json() == {"detail": "Not authenticated"}


def test_app_pages_render(settings: Settings) -> None:
    _fill(settings)
    client = _client(settings)
    page = client.get("/signals/direction_1h", headers=AUTH)
    assert page.status_code == 200
    assert "<svg" in page.text and 'id="rollout-step"' in page.text and "step 2" in page.text
    assert 'id="guards"' in page.text and 'id="live"' in page.text
    assert "drift on direction_1h" in page.text and "drift on other" not in page.text
    data = client.get("/api/signals/direction_1h", headers=AUTH).json()
    assert data["rollout"]["challenger_version"] == "2"
    assert client.get("/", headers=AUTH).status_code == 200


def test_app_on_an_empty_deployment_says_nothing_yet(settings: Settings) -> None:
    client = _client(settings)
    page = client.get("/", headers=AUTH)
    assert page.status_code == 200 and 'id="nothing-yet"' in page.text
    one = client.get("/signals/direction_1h", headers=AUTH)
    assert one.status_code == 200 and "no model yet" in one.text and "no rollout yet" in one.text


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("drift/reports/direction_1h/v1_a_b.html", 200),
        ("drift/../warehouse.db", 404),  # httpx resolves the dots: asks for /warehouse.db
        ("drift/%2e%2e/warehouse.db", 400),
        ("warehouse.db", 404),
        ("mlflow.db", 404),
        ("drift/reports/missing.html", 404),
        ("validation//x", 400),
    ],
)
def test_state_files_cannot_leave_their_folders(settings: Settings, path: str, status: int) -> None:
    _fill(settings)
    response = _client(settings).get(f"/artifacts/state/{path}", headers=AUTH)
    assert response.status_code == status, response.text
    if status == 200:
        assert response.text == "<html>evidently</html>"


def test_state_file_symlink_out_is_refused(settings: Settings, tmp_path: Path) -> None:
    _fill(settings)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (settings.state_dir.resolve() / "drift" / "leak.txt").symlink_to(secret)
    assert _client(settings).get("/artifacts/state/drift/leak.txt", headers=AUTH).status_code == 404


def test_run_artifacts_refuse_bad_ids_and_paths(settings: Settings) -> None:
    client = _client(settings)
    assert client.get("/artifacts/runs/not-a-run/x.md", headers=AUTH).status_code == 400
    run = "0" * 32
    assert client.get(f"/artifacts/runs/{run}/a/%2e%2e/%2e%2e/x", headers=AUTH).status_code == 400
    assert client.get(f"/artifacts/runs/{run}/evaluation/x.md", headers=AUTH).status_code == 404
