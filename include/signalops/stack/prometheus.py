"""The native Prometheus's config, written from the compose one.

The optional ``prometheus`` service (``STACK_PROMETHEUS``) scrapes the sidecar and the
signalops exporter with ``ops/prometheus/prometheus.yml`` (the compose config), its scrape
targets moved from compose's service names to the native ports and its rule files (the same
rules) named by absolute path. ``provision.set_up`` writes it under ``<STACK_DIR>/prometheus``
where the Procfile's prometheus line reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from signalops.stack.definition import REPO

PROMETHEUS_DIR = REPO / "ops" / "prometheus"  # prometheus.yml (compose's), rules/
# Where the native Prometheus finds each scrape job of ops/prometheus/prometheus.yml (compose:
# a service name and its container port). Jobs not named here have no native process
# (Airflow's StatsD goes to statsd-exporter, a compose service only) and are left out.
NATIVE_TARGETS = {
    "prometheus": "PROMETHEUS_PORT",
    "signalops-sidecar": "SIGNALOPS_SERVING__PORT",
    "signalops-exporter": "EXPORTER_PORT",
}


def prometheus_config(env: Mapping[str, str]) -> dict[str, Any]:
    """ops/prometheus/prometheus.yml with the native targets (NATIVE_TARGETS) and the rule
    files by absolute path."""
    import yaml

    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["rule_files"] = [str(PROMETHEUS_DIR / f) for f in config.get("rule_files", [])]
    jobs = []
    for job in config["scrape_configs"]:
        port_key = NATIVE_TARGETS.get(job["job_name"])
        if port_key is not None:
            job["static_configs"] = [{"targets": [f"127.0.0.1:{env[port_key]}"]}]
            jobs.append(job)
    config["scrape_configs"] = jobs
    return config


def write_prometheus_config(env: Mapping[str, str]) -> Path:
    """The native Prometheus config, as the Procfile's prometheus line reads it."""
    import yaml

    path = Path(env["STACK_DIR"]) / "prometheus" / "prometheus.yml"
    (path.parent / "data").mkdir(parents=True, exist_ok=True)
    header = f"# written by signalops.stack from {PROMETHEUS_DIR / 'prometheus.yml'}: edit that\n"
    path.write_text(header + yaml.safe_dump(prometheus_config(env), sort_keys=False))
    return path
