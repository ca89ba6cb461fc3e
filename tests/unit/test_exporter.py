"""The Prometheus exporter on a filled SQLite warehouse in tmp_path (no Airflow, no MLflow)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from signalops.cockpit import exporter, exporter_collector, exporter_gauges, exporter_sources
from signalops.config import Settings
from signalops.evaluation import metrics as ml
from signalops.warehouse import Warehouse
from tests.warehouse_rows import fill_warehouse

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def names(found: dict) -> set[str]:
    return {name for name, _ in found}


@pytest.fixture
def filled(settings: Settings) -> Settings:
    fill_warehouse(settings, NOW)
    return settings


def collect(settings: Settings, **kwargs) -> dict:
    collector = exporter_collector.SignalCollector(settings, clock=lambda: NOW, **kwargs)
    try:
        body, content_type = exporter.render(collector)
    finally:
        collector.close()
    assert content_type.startswith("text/plain; version=")
    return samples(body)


def test_gauges_from_a_filled_warehouse(filled: Settings) -> None:
    found = collect(
        filled,
        dag_ages=lambda: {"market_data": 120.0, "drift_monitor": 30.5},
        aliases=lambda s: {"champion": "1", "challenger": "2"} if s == "direction_1h" else {},
    )
    # drift: the newest window per signal
    assert value(found, "signalops_drift_severity", signal="direction_1h", version="2") == 3
    assert value(found, "signalops_drift_severity", signal="other", version="7") == 2
    assert value(found, "signalops_drift_share_drifted", signal="direction_1h", version="2") == 0.4
    assert not any(
        n == "signalops_drift_severity" and ("version", "1") in labels for n, labels in found
    ), "an older window of the same signal must not be exported"
    end = value(found, "signalops_drift_window_end_timestamp_seconds", signal="other", version="7")
    assert end == (NOW - timedelta(hours=3)).timestamp()

    # rollouts: the active one, else the newest; status as a state set
    assert (
        value(found, "signalops_rollout_weight", signal="direction_1h", version="2", champion="1")
        == 0.1
    )
    assert (
        value(found, "signalops_rollout_step", signal="direction_1h", version="2", champion="1")
        == 2
    )
    status = {
        dict(labels)["status"]: v
        for n, labels in found
        if n == "signalops_rollout_status" and ("signal", "direction_1h") in labels
        for v in [found[(n, labels)]]
    }
    assert status["active"] == 1 and sum(status.values()) == 1
    assert set(status) == set(exporter_gauges.ROLLOUT_STATUSES)
    assert value(found, "signalops_rollout_status", signal="other", version="7", status="promoted")

    # live metrics: the one home of the formulas, within the window only
    y, p = np.array([1, 0, 0, 0]), np.array([0.7, 0.2, 0.6, 0.4])
    assert value(found, "signalops_live_accuracy", signal="direction_1h", version="1") == 0.75
    assert value(found, "signalops_live_log_loss", signal="direction_1h", version="1") == (
        pytest.approx(ml.log_loss(y, p))
    )
    assert value(found, "signalops_live_outcomes", signal="direction_1h", version="2") == 2
    stale = frozenset({("signal", "direction_1h"), ("version", "9")})
    assert ("signalops_live_accuracy", stale) not in found, "outside the live window"

    assert value(found, "signalops_alerts", kind="drift", status="sent") == 2
    assert value(found, "signalops_alerts", kind="rollout", status="failed") == 1
    assert value(found, "signalops_dag_last_success_age_seconds", dag_id="market_data") == 120
    assert (
        value(found, "signalops_model_alias", signal="direction_1h", alias="champion", version="1")
        == 1
    )
    for source in ("warehouse", "registry", "airflow"):
        assert value(found, "signalops_exporter_source_up", source=source) == 1


def test_empty_deployment_has_no_samples_and_creates_nothing(settings: Settings) -> None:
    found = collect(settings)  # no warehouse file at all
    assert names(found) == set()
    assert not settings.state_dir.exists(), "a scrape must not create the state dir"

    with Warehouse(settings.warehouse_url):  # a file without tables
        pass
    Path(settings.warehouse_url.removeprefix("sqlite:///")).touch()
    found = collect(settings, dag_ages=dict, aliases=lambda s: {})
    assert names(found) == {"signalops_exporter_source_up"}
    assert value(found, "signalops_exporter_source_up", source="warehouse") == 1


def test_dag_ages_only_where_airflow_is(filled: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exporter, "in_airflow", lambda: False)
    body, _ = exporter.metrics_payload(filled, aliases=False)
    assert b"signalops_dag_last_success_age_seconds" not in body
    assert b"signalops_drift_severity" in body

    monkeypatch.setattr(exporter, "in_airflow", lambda: True)  # the plugin in the api-server
    monkeypatch.setattr(exporter, "airflow_dag_ages", lambda: {"retrain": 60.0})
    body, _ = exporter.metrics_payload(filled, aliases=False)
    assert b'signalops_dag_last_success_age_seconds{dag_id="retrain"} 60.0' in body


def test_in_airflow_means_its_orm_is_configured(tmp_path: Path) -> None:
    """In a fresh process: not before ``import airflow``, which configures the ORM."""
    script = (
        "from signalops.cockpit import exporter_sources as e; assert not e.in_airflow(); "
        "import airflow; assert e.in_airflow()"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path / 'airflow.db'}",
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_hung_registry_costs_only_its_gauges(
    filled: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow's client retries for minutes against a dead server: a scrape waits
    ALIAS_TIMEOUT_S, reports the registry down, and a later scrape gets the late answer."""
    release = threading.Event()
    calls = []

    class SlowRegistry:
        def __init__(self, settings: Settings, signal: str):
            self.signal = signal

        def aliases(self) -> dict[str, str]:
            calls.append(self.signal)
            release.wait(30)
            return {"champion": "4"}

    monkeypatch.setattr(exporter_sources, "Registry", SlowRegistry)
    monkeypatch.setattr(
        "signalops.cockpit.state_registry.mlflow_store_exists", lambda settings: True
    )
    aliases = exporter_sources.CachedAliases(filled, timeout=0.2)
    started = time.monotonic()
    found = collect(filled, aliases=aliases)
    assert time.monotonic() - started < 5
    assert value(found, "signalops_exporter_source_up", source="registry") == 0
    assert value(found, "signalops_drift_severity", signal="other", version="7") == 2
    found = collect(filled, aliases=aliases)  # still hung: joined, not asked again
    assert calls == ["direction_1h"]
    release.set()
    found = collect(filled, aliases=aliases)
    assert value(found, "signalops_exporter_source_up", source="registry") == 1
    assert value(
        found, "signalops_model_alias", signal="direction_1h", alias="champion", version="4"
    )


def test_a_failing_source_is_reported_not_raised(filled: Settings) -> None:
    def broken() -> dict[str, float]:
        raise RuntimeError("metadata DB down")

    def no_mlflow(signal: str) -> dict[str, str]:
        raise ConnectionError("MLflow down")

    found = collect(filled, dag_ages=broken, aliases=no_mlflow)
    assert value(found, "signalops_exporter_source_up", source="airflow") == 0
    assert value(found, "signalops_exporter_source_up", source="registry") == 0
    assert value(found, "signalops_drift_severity", signal="other", version="7") == 2


def test_standalone_server(filled: Settings) -> None:
    server = exporter.serve(filled, port=0, dag_ages=lambda: {"outcomes": 5.0}, aliases=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        for path in ("/metrics", "/signalops/metrics"):
            r = httpx.get(url + path, timeout=10)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain")
            assert 'signalops_dag_last_success_age_seconds{dag_id="outcomes"}' in r.text
        assert httpx.get(url + "/health", timeout=10).text == "ok\n"
        assert httpx.get(url + "/nope", timeout=10).status_code == 404
    finally:
        server.shutdown()
        server.server_close()
