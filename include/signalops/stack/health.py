"""The stack's health checks, and waiting until every service passes its own.

A check per Procfile service (``health_checks``): the HTTP health endpoints of MLflow, the
Airflow api-server and scheduler, the sidecar, the exporter and Prometheus; the Airflow
dag-processor and triggerer as the api-server's ``/monitor/health`` reports them; the
Celery worker once its log says it is ready. ``wait_healthy`` polls them until all pass,
the supervisor exits, or ``UP_TIMEOUT_S`` runs out (naming the failing services' logs).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from signalops.stack.definition import StackError, services
from signalops.stack.supervisor import read_state

UP_TIMEOUT_S = 300.0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _airflow_component(env: Mapping[str, str], component: str) -> Callable[[], bool]:
    """A component is healthy when the api-server's public /monitor/health says so."""

    def check() -> bool:
        url = f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/monitor/health"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return (body.get(component) or {}).get("status") == "healthy"

    return check


def _celery_ready(directory: Path) -> Callable[[], bool]:
    """The worker logs "ready." once it consumes from the broker (after its newest start)."""

    def check() -> bool:
        log = directory / "logs" / "airflow-worker.log"
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return False
        return " ready." in text[text.rfind("==> ") :]

    return check


def health_checks(env: Mapping[str, str]) -> dict[str, Callable[[], bool]]:
    directory = Path(env["STACK_DIR"])
    return {
        "mlflow": lambda: _http_ok(f"http://127.0.0.1:{env['MLFLOW_PORT']}/health"),
        "airflow-apiserver": lambda: _http_ok(
            f"http://127.0.0.1:{env['AIRFLOW__API__PORT']}/api/v2/version"
        ),
        "airflow-scheduler": lambda: _http_ok(
            f"http://127.0.0.1:{env['AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT']}/health"
        ),
        "airflow-dag-processor": _airflow_component(env, "dag_processor"),
        "airflow-triggerer": _airflow_component(env, "triggerer"),
        "airflow-worker": _celery_ready(directory),
        "signalops-sidecar": lambda: _http_ok(
            f"http://127.0.0.1:{env['SIGNALOPS_SERVING__PORT']}/health"
        ),
        "signalops-exporter": lambda: _http_ok(f"http://127.0.0.1:{env['EXPORTER_PORT']}/health"),
        "prometheus": lambda: _http_ok(f"http://127.0.0.1:{env['PROMETHEUS_PORT']}/-/ready"),
    }


def wait_healthy(env: Mapping[str, str], timeout_s: float = UP_TIMEOUT_S) -> dict[str, bool]:
    checks = {s.name: health_checks(env)[s.name] for s in services(env)}
    deadline = time.monotonic() + timeout_s
    status: dict[str, bool] = {}
    while True:
        status = {name: check() for name, check in checks.items()}
        if all(status.values()):
            return status
        if read_state(env) is None:
            raise StackError(f"the supervisor exited; see the logs under {env['STACK_DIR']}/logs")
        if time.monotonic() > deadline:
            bad = [n for n, ok in status.items() if not ok]
            raise StackError(
                f"not healthy after {timeout_s:.0f} s: {', '.join(bad)}; see "
                + ", ".join(f"{env['STACK_DIR']}/logs/{n}.log" for n in bad)
            )
        time.sleep(1)
