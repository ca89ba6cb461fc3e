"""ops/prometheus and ops/grafana: promtool's checks, and agreement with what runs them.

``promtool check config`` on the compose config and on the one ``make stack`` writes for the
native ports, ``promtool check rules`` and ``promtool test rules`` (every alert has a test
that fires it). promtool comes with Debian's ``prometheus`` package; without it these tests
skip locally and FAIL in CI (``CI=true``), so a CI image without it cannot go green.
Then: every scrape target is a compose service on the port it listens on, the statsd mapping
matches Airflow's metric names, and Grafana's provisioning matches the compose mounts.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from signalops.stack.definition import OPTIONAL, load_env, read_procfile
from signalops.stack.prometheus import NATIVE_TARGETS, write_prometheus_config

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "ops" / "prometheus"
GRAFANA = REPO / "ops" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
STATSD_MAPPING = PROMETHEUS / "statsd-mapping.yml"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        why = "promtool is not installed (Debian: apt-get install prometheus)"
        if in_ci():
            pytest.fail(f"{why}; CI must run the Prometheus config checks", pytrace=False)
        pytest.skip(f"{why}; in CI (CI=true) this fails instead")
    return found


def run(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> str:
    proc = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(load(REPO / "docker-compose.yaml"))


@pytest.fixture(scope="module")
def native_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    state = tmp_path_factory.mktemp("stack")
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(state))}
    return load_env({**base, "STACK_DIR": str(state), "PROMETHEUS_PORT": "19090"})


# --- promtool --------------------------------------------------------------------------


def test_compose_config_is_valid(promtool: str) -> None:
    out = run(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in out and "rule files found" in out, out


def test_native_config_is_valid_and_targets_the_native_ports(
    promtool: str, native_env: dict[str, str]
) -> None:
    path = write_prometheus_config(native_env)
    assert path.parent == Path(native_env["STACK_DIR"]) / "prometheus"
    run(promtool, "check", "config", str(path), cwd=path.parent)
    config = load(path)
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets == {
        "prometheus": ["127.0.0.1:19090"],
        "signalops-sidecar": [f"127.0.0.1:{native_env['SIDECAR_PORT']}"],
        "signalops-exporter": [f"127.0.0.1:{native_env['EXPORTER_PORT']}"],
    }
    compose_config = load(PROMETHEUS / "prometheus.yml")
    assert config["rule_files"] == [str(PROMETHEUS / f) for f in compose_config["rule_files"]]
    assert config["global"] == compose_config["global"]


def test_rules_are_valid(promtool: str) -> None:
    files = sorted(str(p.relative_to(PROMETHEUS)) for p in (PROMETHEUS / "rules").glob("*.yml"))
    assert files == ["rules/alerts.yml", "rules/recording.yml"]
    assert set(files) == set(load(PROMETHEUS / "prometheus.yml")["rule_files"])
    run(promtool, "check", "rules", *files)


def test_rule_unit_tests_pass(promtool: str) -> None:
    out = run(promtool, "test", "rules", "tests/rules_test.yml")
    assert "SUCCESS" in out, out


def test_promtool_tests_really_run(promtool: str, tmp_path: Path) -> None:
    """A wrong expectation fails: the rule tests are not vacuous."""
    broken = load(PROMETHEUS / "tests" / "rules_test.yml")
    broken["rule_files"] = [str(PROMETHEUS / "rules" / Path(f).name) for f in broken["rule_files"]]
    broken["tests"][0]["promql_expr_test"][1]["exp_samples"][0]["value"] = 0.5
    path = tmp_path / "broken_test.yml"
    path.write_text(yaml.safe_dump(broken))
    proc = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0 and "FAILED" in proc.stdout + proc.stderr


def test_every_alert_has_a_test_that_fires_it() -> None:
    alerts = {
        rule["alert"]
        for group in load(PROMETHEUS / "rules" / "alerts.yml")["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    fired = {
        case["alertname"]
        for test in load(PROMETHEUS / "tests" / "rules_test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts, "no alert rules"
    assert not alerts - fired, f"alerts no test fires: {sorted(alerts - fired)}"
    assert not fired - alerts, f"tests of alerts that do not exist: {sorted(fired - alerts)}"
    required = {  # the alerts
        "SignalopsSidecarSlowP99",
        "SignalopsSidecarErrors",
        "SignalopsLowPredictionRate",
        "SignalopsDriftHigh",
        "SignalopsMarketDataStale",
        "SignalopsRiskBreakerOpen",
    }
    assert required <= alerts, sorted(required - alerts)


# --- the config against docker-compose.yaml ----------------------------------------------


def listen_port(service: dict[str, Any], flag: str) -> str:
    """The port of ``--flag=host:port`` (or ``:port``) in a service's command."""
    for word in service["command"]:
        if word.startswith(f"{flag}="):
            return str(word.rsplit(":", 1)[1])
    raise AssertionError(f"no {flag} in {service['command']}")


def test_targets_are_compose_services_on_their_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    exporter_env = services["signalops-exporter"]["environment"]
    sidecar_env = services["signalops-sidecar"]["environment"]
    listening = {  # service -> the port it listens on inside its container
        "signalops-sidecar": str(sidecar_env["SIGNALOPS_SERVING__PORT"]),
        "signalops-exporter": str(exporter_env["EXPORTER_PORT"]),
        "statsd-exporter": listen_port(services["statsd-exporter"], "--web.listen-address"),
        "localhost": listen_port(services["prometheus"], "--web.listen-address"),  # itself
    }
    config = load(PROMETHEUS / "prometheus.yml")
    jobs = set()
    for job in config["scrape_configs"]:
        jobs.add(job["job_name"])
        for target in (t for sc in job["static_configs"] for t in sc["targets"]):
            host, port = target.rsplit(":", 1)
            assert host in listening, f"job {job['job_name']}: {host} is no compose service"
            assert port == listening[host], f"job {job['job_name']}: {host} listens on {port}?"
    assert set(NATIVE_TARGETS) <= jobs, "NATIVE_TARGETS names a job prometheus.yml lacks"

    prometheus = services["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"]}
    assert mounts["/etc/prometheus"] == "./ops/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    published = prometheus["ports"][0].rsplit(":", 1)[1]
    assert published == listening["localhost"], "prometheus publishes another port"

    statsd = services["statsd-exporter"]
    mapping = next(v for v in statsd["volumes"] if v.startswith("./ops/prometheus/statsd-mapping"))
    assert f"--statsd.mapping-config={mapping.split(':')[1]}" in statsd["command"]
    airflow_env = compose["x-airflow-common"]["environment"]
    assert airflow_env["AIRFLOW__METRICS__STATSD_HOST"] == "statsd-exporter"
    udp = listen_port(statsd, "--statsd.listen-udp")
    assert str(airflow_env["AIRFLOW__METRICS__STATSD_PORT"]) == udp


def test_native_stack_runs_prometheus_from_the_same_file() -> None:
    procfile = {s.name: s.command for s in read_procfile()}
    assert "prometheus/prometheus.yml" in procfile["prometheus"]
    assert procfile["signalops-exporter"].startswith("python -m signalops.cockpit.exporter")
    assert OPTIONAL == {"prometheus": "STACK_PROMETHEUS"}


# --- statsd-exporter mapping against Airflow's metric names ------------------------------


def airflow_legacy_names() -> dict[str, list[str]]:
    """Airflow's StatsD names with variables (``ti.finish.{dag_id}.{task_id}.{state}``),
    from the metrics template of the installed Airflow -> the variables, in order."""
    import importlib.util

    spec = importlib.util.find_spec("airflow")  # found, not imported (that configures its ORM)
    assert spec is not None and spec.origin, "Airflow is not installed"
    template = Path(spec.origin).parent / "_shared/observability/metrics/metrics_template.yaml"
    names = {}
    for metric in load(template)["metrics"]:
        for name in (metric["legacy_name"], metric["name"]):
            if name and name != "-":
                names[name] = re.findall(r"\{(\w+)\}", name)
    return names


def test_statsd_mapping_matches_airflow_names() -> None:
    mapping = load(STATSD_MAPPING)
    declared = airflow_legacy_names()
    by_glob = {re.sub(r"\{\w+\}", "*", name): variables for name, variables in declared.items()}
    problems = []
    for rule in mapping["mappings"]:
        match, labels = rule["match"], rule.get("labels", {})
        assert match.startswith("airflow."), f"{match}: AIRFLOW__METRICS__STATSD_PREFIX is airflow"
        glob = match.removeprefix("airflow.")
        if glob not in by_glob:
            problems.append(f"{match}: no such metric in Airflow's metrics template")
            continue
        expected = {var: f"${i}" for i, var in enumerate(by_glob[glob], start=1)}
        if labels != expected:
            problems.append(f"{match}: labels {labels}, Airflow's name gives {expected}")
        assert re.fullmatch(r"airflow_[a-z_]+", rule["name"]), rule["name"]
    assert not problems, "\n".join(problems)


# --- Grafana provisioning ----------------------------------------------------------------


def test_grafana_provisioning_matches_compose(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    provider = load(GRAFANA / "provisioning" / "dashboards" / "signalops.yml")["providers"][0]
    assert mounts[provider["options"]["path"]] == "./ops/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).name in {p.name for p in DASHBOARDS}
    source = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    prometheus_port = listen_port(compose["services"]["prometheus"], "--web.listen-address")
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    assert source["type"] == "prometheus"


def datasource_uids(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = set().union(*(datasource_uids(v) for v in node.values()), set())
        source = node.get("datasource")
        if isinstance(source, dict) and "uid" in source:
            found.add(source["uid"])
        return found
    if isinstance(node, list):
        return set().union(*(datasource_uids(v) for v in node), set())
    return set()


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    source = load(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource_uids(dashboard) == {source["uid"]}, "every query on the provisioned source"
    assert dashboard["uid"] and dashboard["title"]
    panels = dashboard["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        if panel["type"] == "row":
            continue
        refs = [t["refId"] for t in panel["targets"]]
        assert panel["targets"] and len(refs) == len(set(refs)), panel["title"]
        assert all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']}: wider than the grid"
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in (
        "request rate",
        "latency percentiles",
        "errors",
        "canary split",
        "drift severity",
        "live accuracy",
        "dag freshness",
    ):
        assert topic in titles, f"no panel about {topic}"
