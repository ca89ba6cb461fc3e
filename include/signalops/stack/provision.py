"""The one-shot steps before the stack's services start (compose's init-db and airflow-init).

``check_ports``: every port the stack listens on is free (another process there would
answer the health checks in its place). ``set_up`` (idempotent): the state folders, the
native Prometheus config where Prometheus runs, the PostgreSQL databases
(``<STACK_DB_PREFIX>_<name>`` on ``STACK_PG``, ``create_databases``), then
``airflow db migrate`` (logged to ``<STACK_DIR>/logs/airflow-init.log``).
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

from signalops.stack.definition import StackError, services
from signalops.stack.prometheus import write_prometheus_config

DATABASES = ("airflow", "warehouse", "mlflow")  # <prefix>_<name> on STACK_PG
AIRFLOW_INIT = "airflow db migrate"  # compose's airflow-init runs the same command
PORTS = {  # the setting -> what listens there
    "AIRFLOW__API__PORT": "the Airflow api-server (set AIRFLOW_PORT)",
    "MLFLOW_PORT": "the MLflow server (set MLFLOW_PORT)",
    "SIGNALOPS_SERVING__PORT": "the sidecar (set SIDECAR_PORT)",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": (
        "the scheduler's health check (set AIRFLOW_SCHEDULER_HEALTH_PORT)"
    ),
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": (
        "the worker's log server (set AIRFLOW_WORKER_LOG_PORT)"
    ),
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": (
        "the triggerer's log server (set AIRFLOW_TRIGGERER_LOG_PORT)"
    ),
    "EXPORTER_PORT": "the signalops exporter (set EXPORTER_PORT)",
    "PROMETHEUS_PORT": "Prometheus (set PROMETHEUS_PORT, or STACK_PROMETHEUS=false)",
}
PORT_SERVICES = {"PROMETHEUS_PORT": "prometheus"}  # ports only checked where that service runs


def create_databases(env: Mapping[str, str]) -> list[str]:
    """Create the stack's PostgreSQL databases that are missing; their names."""
    import sqlalchemy as sa

    server = sa.make_url(env["STACK_PG"])
    prefix = env["STACK_DB_PREFIX"]
    engine = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    names = [f"{prefix}_{db}" for db in DATABASES]
    try:
        with engine.connect() as conn:
            have = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
            for name in names:
                if name not in have:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        raise StackError(
            f"PostgreSQL is not reachable at {server.render_as_string(hide_password=True)} "
            f"({exc.orig}); start it, or point STACK_PG at one"
        ) from exc
    finally:
        engine.dispose()
    return names


def check_ports(env: Mapping[str, str]) -> None:
    """Every port the stack listens on is free: another process there (an `airflow
    standalone`, a second stack) would answer the health checks in its place."""
    import socket

    running = {s.name for s in services(env)}
    busy = []
    for key, what in PORTS.items():
        optional = PORT_SERVICES.get(key)
        if optional is not None and optional not in running:
            continue  # an optional service this stack does not run
        port = int(env[key])
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                busy.append(f"{port}: {what}")
    if busy:
        raise StackError(
            "ports already in use: " + ", ".join(busy) + "; stop what holds them or move the stack"
        )


def set_up(env: Mapping[str, str]) -> None:
    """The one-shot steps before the services start (idempotent)."""
    directory = Path(env["STACK_DIR"])
    for sub in ("logs", "control", "state", "airflow", "mlflow-artifacts"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    if "prometheus" in {s.name for s in services(env)}:
        write_prometheus_config(env)
    create_databases(env)
    log = directory / "logs" / "airflow-init.log"
    with log.open("ab") as out:
        rc = subprocess.run(
            shlex.split(AIRFLOW_INIT), check=False, env=dict(env), stdout=out, stderr=out
        ).returncode
    if rc != 0:
        raise StackError(f"`{AIRFLOW_INIT}` failed (rc {rc}); see {log}")
