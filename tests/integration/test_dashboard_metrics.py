"""Every metric the Grafana dashboard and the Prometheus rules name is one a running process
exposes.

The real sidecar (``python -m signalops.serving``, serving a registered champion, after a
few requests, one of them refused) and the real exporter (``python -m
signalops.cockpit.exporter --airflow`` over a warehouse with drift checks, rollouts,
outcomes and alerts, an MLflow store and a migrated Airflow metadata DB with a successful
run) are started on free ports and scraped. Each PromQL expression of the dashboard (panel
queries, the variable's ``label_values``) and of the rules is reduced to the metric names it
selects, recording rules expanded to their definitions, and every name must be among the
scraped samples; the label names it uses (matchers, ``by``/``on`` lists, legends,
``$labels`` in alert texts) must be labels of those metrics.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.training import retrain as steps
from tests.conftest import TRAIN_SYMBOLS, copy_lake
from tests.sidecar_process import free_port, running_sidecar, wait_http
from tests.warehouse_rows import fill_warehouse

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "ops" / "grafana" / "dashboards").glob("*.json"))
RULES = REPO / "ops" / "prometheus" / "rules"
# Series Prometheus makes itself: `up` per target, and the labels it adds to every target.
PROMETHEUS_OWN = {"up": {"job", "instance"}}
TARGET_LABELS = {"job", "instance"}

# --- PromQL, as far as the names go ------------------------------------------------------

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
            "unless", "offset", "inf", "nan"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_NUMBER = re.compile(r"(?<![\w:.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w:])")
_NAME = re.compile(r"[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([A-Za-z_:][\w:]*)[^,]*,\s*(\w+)\s*\)\s*$")


def names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) that a PromQL expression uses."""
    if m := _LABEL_VALUES.match(expr):  # Grafana's variable query, not PromQL
        return {m[1]}, {m[2]}
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for block in _MATCHERS.findall(text):
        labels |= set(_MATCHER_LABEL.findall(block))
    text = _MATCHERS.sub(" ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    for clause in _CLAUSE.findall(text):
        labels |= {w.strip() for w in clause.split(",") if w.strip()}
    text = _NUMBER.sub(" ", _CLAUSE.sub(" ", text))
    metrics = {
        m[0]
        for m in _NAME.finditer(text)
        if m[0] not in KEYWORDS and not re.match(r"\s*\(", text[m.end() :])
    }
    return metrics, labels


@pytest.mark.parametrize(
    ("expr", "metrics", "labels"),
    [
        (
            "histogram_quantile(0.99, sum by (le, endpoint) (rate(a_bucket[$__rate_interval])))",
            {"a_bucket"},
            {"le", "endpoint"},
        ),
        (
            'sum by (version, role) (x:y:z{signal=~"$signal", role!="shadow"})',
            {"x:y:z"},
            {"version", "role", "signal"},
        ),
        ("(a or b * 0) / clamp_min(c, 1e-9) > 3 * 3600", {"a", "b", "c"}, set()),
        (
            "max by (instance) (breaker) == 1 and on (job) up",
            {"breaker", "up"},
            {"instance", "job"},
        ),
        (
            "label_values(signalops_predictions_total, signal)",
            {"signalops_predictions_total"},
            {"signal"},
        ),
    ],
)
def test_names_in(expr: str, metrics: set[str], labels: set[str]) -> None:
    assert names_in(expr) == (metrics, labels)


def recording_rules() -> dict[str, str]:
    rules = yaml.safe_load((RULES / "recording.yml").read_text())
    return {r["record"]: r["expr"] for g in rules["groups"] for r in g["rules"]}


def selected(expr: str, recorded: dict[str, str], seen: frozenset[str] = frozenset()) -> set[str]:
    """The scraped metric names an expression reads, recording rules expanded."""
    found: set[str] = set()
    for name in names_in(expr)[0]:
        if ":" not in name:
            found.add(name)
            continue
        assert name in recorded, f"{name}: no such recording rule in {RULES / 'recording.yml'}"
        assert name not in seen, f"{name}: recording rules refer to each other in a loop"
        found |= selected(recorded[name], recorded, seen | {name})
    return found


# --- the processes -----------------------------------------------------------------------


@dataclass
class Exposed:
    """Sample names -> the label names seen on them, per process."""

    sidecar: dict[str, set[str]]
    exporter: dict[str, set[str]]

    def all(self) -> dict[str, set[str]]:
        merged: dict[str, set[str]] = {**PROMETHEUS_OWN}
        for source in (self.sidecar, self.exporter):
            for name, labels in source.items():
                merged[name] = merged.get(name, set()) | labels | TARGET_LABELS
        return merged


def scrape(url: str) -> dict[str, set[str]]:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text[:500]
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def scrape_exporter(url: str, timeout: float = 90) -> dict[str, set[str]]:
    """A scrape in which every source was read: the first ones may find the registry not
    answering yet (importing MLflow takes seconds; a scrape waits ALIAS_TIMEOUT_S)."""
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url, timeout=30).text
        up = {
            s.labels["source"]: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "signalops_exporter_source_up"
        }
        if up == {"warehouse": 1, "registry": 1, "airflow": 1}:
            return scrape(url)
        assert time.monotonic() < deadline, f"exporter sources not all up: {up}"
        time.sleep(1)


def migrate_airflow(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    airflow = str(Path(sys.executable).with_name("airflow"))
    with open(log, "wb") as out:
        return subprocess.Popen(
            [airflow, "db", "migrate"], env=env, cwd=log.parent, stdout=out, stderr=out
        )


def record_success(metadata_url: str, dag_id: str, ended: datetime) -> None:
    """A successful run of ``dag_id`` in Airflow's migrated metadata DB (its own schema,
    reflected: no Airflow import in the test process)."""
    engine = sa.create_engine(metadata_url)
    try:
        dag_run = sa.Table("dag_run", sa.MetaData(), autoload_with=engine)
        naive = ended.astimezone(UTC).replace(tzinfo=None)
        with engine.begin() as conn:
            conn.execute(
                dag_run.insert().values(
                    dag_id=dag_id,
                    run_id=f"manual__{ended.isoformat()}",
                    run_type="manual",
                    state="success",
                    run_after=naive,
                    start_date=naive - timedelta(minutes=2),
                    end_date=naive,
                )
            )
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def exposed(training_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exposed]:
    tmp = tmp_path_factory.mktemp("dashboard")
    home = tmp / "airflow"
    home.mkdir()
    metadata_url = f"sqlite:///{home / 'airflow.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALOPS_", "AIRFLOW"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata_url,
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__UNIT_TEST_MODE="False",
    )
    migrate = migrate_airflow(env, tmp / "migrate.log")  # while the model trains

    settings = copy_lake(training_lake, tmp)
    results = steps.run_all(settings, steps.plan_request(settings, {}, run_key="v1"))
    assert "register" in results, {k: v.summary for k, v in results.items()}
    now = datetime.now(UTC)
    fill_warehouse(settings, now)
    spec = Registry(settings).download_file("1", c.FEATURE_SPEC, tmp / "spec").read_text()
    names = json.loads(spec)["names"]
    if migrate.wait(timeout=300) != 0:
        pytest.fail(f"airflow db migrate failed:\n{(tmp / 'migrate.log').read_text()[-3000:]}")
    record_success(metadata_url, "market_data", now - timedelta(minutes=20))

    env.update(
        SIGNALOPS_STATE_DIR=str(settings.state_dir),
        SIGNALOPS_MARKET__SYMBOLS=TRAIN_SYMBOLS,
        SIGNALOPS_SERVING__PORT=str(free_port()),
        EXPORTER_PORT=str(free_port()),
    )
    exporter_url = f"http://127.0.0.1:{env['EXPORTER_PORT']}"
    exporter_log = tmp / "exporter.log"
    with open(exporter_log, "wb") as out:
        exporter = subprocess.Popen(
            [sys.executable, "-m", "signalops.cockpit.exporter", "--airflow"],
            env=env,
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with running_sidecar(env, tmp, tmp / "sidecar.log") as (url, _):
            wait_http(f"{exporter_url}/health", exporter, exporter_log, 90)
            features = {n: 0.01 * i for i, n in enumerate(names)}
            with httpx.Client(base_url=url, timeout=10) as client:
                for i in range(5):
                    body = {"features": features, "key": f"caller-{i}"}
                    r = client.post("/v1/signals", json=body)
                    assert r.status_code == 200, r.text
                refused = client.post("/v1/signals", json={"features": {"nope": 1.0}})
                assert 400 <= refused.status_code < 500, refused.text
            yield Exposed(scrape(f"{url}/metrics"), scrape_exporter(f"{exporter_url}/metrics"))
    finally:
        exporter.terminate()
        exporter.wait(timeout=30)


# --- the checks --------------------------------------------------------------------------


def dashboard_queries() -> list[tuple[str, str, list[str]]]:
    """(where, expr, legend label names) of every query in every dashboard."""
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for var in dashboard.get("templating", {}).get("list", []):
            query = var.get("query")
            expr = query.get("query") if isinstance(query, dict) else query
            if var.get("type") == "query" and expr:
                queries.append((f"{path.name} variable {var['name']}", expr, []))
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                legend = re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", ""))
                where = f"{path.name} panel {panel['title']!r} {target['refId']}"
                queries.append((where, target["expr"], legend))
    return queries


def rule_queries() -> list[tuple[str, str, list[str]]]:
    queries = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                texts = " ".join(str(v) for v in rule.get("annotations", {}).values())
                legend = re.findall(r"\$labels\.(\w+)", texts)
                queries.append((f"{path.name} {name}", rule["expr"], legend))
    return queries


def check(queries: list[tuple[str, str, list[str]]], exposed: dict[str, set[str]]) -> list[str]:
    recorded = recording_rules()
    problems = []
    for where, expr, legend in queries:
        metrics = selected(expr, recorded)
        if not metrics:
            problems.append(f"{where}: selects no metric: {expr}")
        missing = sorted(m for m in metrics if m not in exposed)
        if missing:
            problems.append(f"{where}: {missing} exposed by neither the sidecar nor the exporter")
        known = set().union(*(exposed.get(m, set()) for m in metrics), set())
        labels = names_in(expr)[1] | set(legend)
        unknown = sorted(labels - known)
        if unknown and not missing:
            problems.append(f"{where}: labels {unknown} are on none of {sorted(metrics)}")
    return problems


def test_both_processes_expose_their_families(exposed: Exposed) -> None:
    for name in (
        "signalops_http_requests_total",
        "signalops_prediction_seconds_bucket",
        "signalops_predictions_total",
        "signalops_errors_total",
        "signalops_risk_breaker_open",
    ):
        assert name in exposed.sidecar, f"the sidecar does not expose {name}"
    for name in (
        "signalops_drift_severity",
        "signalops_drift_share_drifted",
        "signalops_rollout_step",
        "signalops_rollout_weight",
        "signalops_live_accuracy",
        "signalops_live_log_loss",
        "signalops_model_alias",
        "signalops_alerts",
        "signalops_dag_last_success_age_seconds",
    ):
        assert name in exposed.exporter, f"the exporter does not expose {name}"
    assert {"signal", "version", "role"} <= exposed.sidecar["signalops_predictions_total"]


def test_every_dashboard_query_names_exposed_metrics(exposed: Exposed) -> None:
    queries = dashboard_queries()
    assert len(queries) > 10, "no dashboard queries found"
    problems = check(queries, exposed.all())
    assert not problems, "\n".join(problems)


def test_every_rule_names_exposed_metrics(exposed: Exposed) -> None:
    problems = check(rule_queries(), exposed.all())
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_wrong_name(exposed: Exposed) -> None:
    wrong = [
        ("typo", "rate(signalops_prediction_total[5m])", []),
        ("label", 'signalops_drift_severity{sigal="x"}', []),
        ("legend", "signalops_live_accuracy", ["role"]),
    ]
    assert len(check(wrong, exposed.all())) == 3
