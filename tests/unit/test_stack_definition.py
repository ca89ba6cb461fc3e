"""docker-compose.yaml runs the topology of ops/Procfile + ops/stack.env (``make stack``).

Same services, same commands (the Airflow image's entrypoint prefixes ``airflow``), same
SIGNALOPS_*/AIRFLOW__*/MLFLOW_* settings except the deployment-specific ones listed in
DEPLOYMENT_SPECIFIC, plus the compose-only ones in COMPOSE_ONLY. Compose values are read with
their ``${VAR:-default}`` defaults (no .env), the native ones with ops/stack.env's defaults
(a clean environment). No services needed.

tests/data/compose-spec.json: schema/compose-spec.json of https://github.com/compose-spec/compose-spec
at commit 170098ba07d9f53c383a41bfd4c5166b0a4529a6 (file last changed in a08f8d5, 2025-10-28).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from signalops.stack.definition import OPTIONAL, load_env, read_procfile
from signalops.stack.provision import AIRFLOW_INIT, DATABASES

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yaml"
SCHEMA = REPO / "tests" / "data" / "compose-spec.json"

# Compose services with no Procfile line: the infrastructure and the one-shot set-up steps.
INFRASTRUCTURE = frozenset({"postgres", "redis", "init-db", "airflow-init"})
# Compose-only services of the "observability" profile, with no native process: Grafana and
# statsd-exporter have no Debian package (natively, Airflow's StatsD stays off).
COMPOSE_ONLY_SERVICES = frozenset({"grafana", "statsd-exporter"})
AIRFLOW_IMAGE = "signalops-airflow"  # built from ./Dockerfile (FROM apache/airflow)
AIRFLOW_COMPONENTS = frozenset(
    {
        "airflow-init",
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-worker",
    }
)

# Services with the Airflow components' environment (x-airflow-common): the exporter reads
# Airflow's metadata DB.
AIRFLOW_ENV = AIRFLOW_COMPONENTS | {"signalops-exporter"}

# Which of ops/stack.env's settings each compose service carries (natively every process gets
# all of them; the other prefixes are read by no code in that service).
SIDECAR_ONLY = "SIGNALOPS_SERVING__"  # the sidecar's own settings; no Airflow component reads them
SCOPES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(AIRFLOW_COMPONENTS, ("SIGNALOPS_", "AIRFLOW__")),
    "signalops-sidecar": ("SIGNALOPS_",),
    # reads the warehouse and MLflow (SIGNALOPS_*) and Airflow's metadata DB (--airflow)
    "signalops-exporter": ("SIGNALOPS_", "AIRFLOW__", "EXPORTER_"),
    "mlflow": ("MLFLOW_",),
}

# Settings whose value depends on where the service runs; compose's value is checked by kind
# only (url: same scheme and not this container; host: all interfaces; port; absolute path;
# secret: taken from a ${VAR}).
DEPLOYMENT_SPECIFIC: dict[str, str] = {
    "SIGNALOPS_STATE_DIR": "path",  # a named volume
    "SIGNALOPS_WAREHOUSE__URL": "url",  # host postgres, database signalops
    "SIGNALOPS_ONLINE_STORE__REDIS_URL": "url",  # host redis
    "SIGNALOPS_MLFLOW__TRACKING_URI": "url",  # host mlflow
    "SIGNALOPS_SERVING__HOST": "host",  # reachable from the published port
    "SIGNALOPS_SERVING__PORT": "port",  # container port; SIDECAR_PORT publishes it
    "AIRFLOW__CORE__DAGS_FOLDER": "path",  # /opt/airflow/dags in the image
    "AIRFLOW__CORE__PLUGINS_FOLDER": "path",  # /opt/airflow/plugins in the image
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "url",  # host postgres, database airflow
    "AIRFLOW__CELERY__BROKER_URL": "url",  # host redis
    "AIRFLOW__CELERY__RESULT_BACKEND": "url",  # host postgres, database airflow
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "url",  # host airflow-apiserver
    "AIRFLOW__API__PORT": "port",  # container port; AIRFLOW_PORT publishes it
    "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": "port",  # one per container
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": "port",  # one per container
    "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "port",  # one per container
    "AIRFLOW__API_AUTH__JWT_SECRET": "secret",  # natively generated into secrets.env
    "AIRFLOW__API__SECRET_KEY": "secret",  # natively generated into secrets.env
    "AIRFLOW__CORE__FERNET_KEY": "secret",  # natively generated into secrets.env
    "MLFLOW_HOST": "host",  # reachable from other containers
    "MLFLOW_PORT": "port",  # container port; MLFLOW_PORT publishes it
    "MLFLOW_BACKEND_STORE_URI": "url",  # host postgres, database mlflow
    "MLFLOW_ARTIFACTS_DESTINATION": "path",  # a named volume
    "EXPORTER_HOST": "host",  # reachable from Prometheus' container
    "EXPORTER_PORT": "port",  # container port; prometheus.yml's target
}

# Settings only compose has, and the services that may set them.
COMPOSE_ONLY: dict[str, frozenset[str]] = {
    # the container host names others call MLflow by (natively: localhost, allowed by default)
    "MLFLOW_SERVER_ALLOWED_HOSTS": frozenset({"mlflow"}),
    # the login password file on the named volume airflow-auth (natively: $AIRFLOW_HOME/...)
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": AIRFLOW_ENV,
    # the image entrypoint: Celery's warm shutdown on SIGTERM
    "DUMB_INIT_SETSID": frozenset({"airflow-worker"}),
    # the image entrypoint: no Airflow metadata-DB wait (the sidecar is no Airflow component)
    "CONNECTION_CHECK_MAX_COUNT": frozenset({"signalops-sidecar"}),
    # Airflow's StatsD to the statsd-exporter service (no native statsd-exporter)
    **dict.fromkeys(
        (
            "AIRFLOW__METRICS__STATSD_ON",
            "AIRFLOW__METRICS__STATSD_HOST",
            "AIRFLOW__METRICS__STATSD_PORT",
            "AIRFLOW__METRICS__STATSD_PREFIX",
        ),
        AIRFLOW_ENV,
    ),
}

# Images whose entrypoint is the program itself: compose gives only its arguments.
ENTRYPOINTS = {"prom/prometheus": "prometheus"}

# The published container port of a service and the setting it listens on.
PUBLISHED = {
    "airflow-apiserver": "AIRFLOW__API__PORT",
    "mlflow": "MLFLOW_PORT",
    "signalops-sidecar": "SIGNALOPS_SERVING__PORT",
}

# DATABASES -> (a setting whose URL names it, a service that carries that setting)
DATABASE_URLS = {
    "airflow": ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "airflow-init"),
    "warehouse": ("SIGNALOPS_WAREHOUSE__URL", "airflow-init"),
    "mlflow": ("MLFLOW_BACKEND_STORE_URI", "mlflow"),
}

_VAR = re.compile(r"\$(?:(\$)|\{(\w+)(?:(:?[-?+])([^}]*))?\}|(\w+))")


def interpolate(value: Any, env: dict[str, str] | None = None) -> str:
    """A compose environment value as the container sees it (``$$``, ``${V}``, ``${V:-d}``...)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    env = env or {}

    def sub(m: re.Match[str]) -> str:
        if m[1]:
            return "$"
        name, op, arg = m[2] or m[5], m[3] or "", m[4] or ""
        have = env.get(name)
        unset = have is None or (have == "" and op.startswith(":"))
        if op.endswith("-"):
            return arg if unset else have or ""
        if op.endswith("+"):
            return "" if unset else arg
        if op.endswith("?") and unset:
            raise ValueError(f"${{{name}}} is required: {arg}")
        return have or ""

    return _VAR.sub(sub, str(value))


def variables(node: Any) -> set[str]:
    """The names of the ${VAR}s a compose document reads."""
    if isinstance(node, dict):
        return set().union(*(variables(v) for v in node.values()), set())
    if isinstance(node, list):
        return set().union(*(variables(v) for v in node), set())
    if isinstance(node, str):
        return {m[2] or m[5] for m in _VAR.finditer(node) if not m[1]}
    return set()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def native(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """ops/stack.env's defaults: a clean environment, the state (secrets.env) in a temp dir."""
    state = tmp_path_factory.mktemp("stack")
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(state))}
    env = load_env({**base, "STACK_DIR": str(state)})
    assert (state / "secrets.env").exists(), "load_env did not keep its secrets in STACK_DIR"
    return env


def environment(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "write compose environments as mappings"
    return env


def is_airflow_image(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":")[0] == AIRFLOW_IMAGE


def effective_command(service: dict[str, Any]) -> list[str]:
    """What the container runs: the official Airflow image's entrypoint runs ``bash``/``python``
    commands as given and prefixes ``airflow`` to any other; ENTRYPOINTS' images run their
    program with the command as its arguments; other images have none."""
    command = service.get("command")
    words = shlex.split(command) if isinstance(command, str) else list(command or [])
    if is_airflow_image(service) and words and words[0] not in {"airflow", "bash", "python"}:
        return ["airflow", *words]
    program = ENTRYPOINTS.get(str(service.get("image", "")).split(":")[0])
    return [program, *words] if program else words


def same_command(native: list[str], composed: list[str]) -> bool:
    """Word by word; a native ``--flag=value`` whose value names a setting (``${STACK_DIR}``,
    ``${PROMETHEUS_PORT}``) is deployment-specific: only its flag must match."""
    if len(native) != len(composed):
        return False
    return all(
        n.split("=", 1)[0] == c.split("=", 1)[0] if "$" in n else n == c
        for n, c in zip(native, composed, strict=True)
    )


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert not errors, "docker-compose.yaml breaks the compose spec:\n" + "\n".join(errors)

    broken = copy.deepcopy(compose)  # the validation really runs: a broken copy fails it
    broken["services"]["redis"]["comand"] = "redis-server"
    broken["services"]["mlflow"]["ports"] = "127.0.0.1:5000:5000"
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(broken)}
    assert {("services", "redis"), ("services", "mlflow", "ports")} <= paths


def test_services_are_the_procfiles(services: dict[str, dict[str, Any]]) -> None:
    procfile = {s.name for s in read_procfile()}
    composed = set(services) - INFRASTRUCTURE - COMPOSE_ONLY_SERVICES
    assert not procfile - composed, f"Procfile services missing in compose: {procfile - composed}"
    assert not composed - procfile, f"compose services not in ops/Procfile: {composed - procfile}"
    assert not INFRASTRUCTURE - set(services), f"missing: {INFRASTRUCTURE - set(services)}"
    assert (REPO / "Dockerfile").read_text().count("FROM apache/airflow:") == 1
    for name in AIRFLOW_COMPONENTS | {"signalops-sidecar", "signalops-exporter"}:
        assert is_airflow_image(services[name]), f"{name}: expected image {AIRFLOW_IMAGE}:..."
    optional = {n for n, s in services.items() if s.get("profiles")}
    assert set(OPTIONAL) <= optional, "a native optional service must be optional in compose"
    for name in COMPOSE_ONLY_SERVICES | {"signalops-exporter", "prometheus"}:
        assert services[name].get("profiles") == ["observability"], name


def test_commands_are_the_procfiles(services: dict[str, dict[str, Any]]) -> None:
    expected = {s.name: s.command for s in read_procfile()}
    expected["airflow-init"] = AIRFLOW_INIT
    for name, command in expected.items():
        assert "entrypoint" not in services[name], f"{name}: no entrypoint override, please"
        got = effective_command(services[name])
        assert same_command(shlex.split(command), got), (
            f"{name}: compose runs {shlex.join(got)!r}, "
            f"ops/Procfile / signalops.stack runs {command!r}"
        )


def check_deployment_specific(name: str, key: str, kind: str, raw: Any, native: str) -> None:
    value = interpolate(raw)
    where = f"{name}: {key}={value!r}"
    if kind == "url":
        assert urlsplit(value).scheme == urlsplit(native).scheme, f"{where}: scheme of {native!r}"
        assert urlsplit(value).hostname not in {"localhost", "127.0.0.1"}, (
            f"{where}: in a container that is the container itself"
        )
    elif kind == "host":
        assert value == "0.0.0.0", f"{where}: a container must listen on all interfaces"
    elif kind == "port":
        assert value.isdigit() and 0 < int(value) < 65536, f"{where}: not a port"
    elif kind == "path":
        assert PurePosixPath(value).is_absolute(), f"{where}: not an absolute path"
    elif kind == "secret":
        assert variables(raw), f"{where}: a secret must come from a ${{VAR}}, not the file"
    else:
        raise AssertionError(f"unknown kind {kind!r} of {key}")


@pytest.mark.parametrize("name", sorted(SCOPES))
def test_settings_are_stack_envs(
    name: str, services: dict[str, dict[str, Any]], native: dict[str, str]
) -> None:
    prefixes = SCOPES[name]
    sidecar = name == "signalops-sidecar"
    wanted = {
        k: v
        for k, v in native.items()
        if k.startswith(prefixes) and (sidecar or not k.startswith(SIDECAR_ONLY))
    }
    assert wanted, f"{name}: ops/stack.env exports nothing for {prefixes}"
    env = environment(services[name])
    problems = []
    for key, value in sorted(wanted.items()):
        if key not in env:
            problems.append(f"{name}: {key} missing (ops/stack.env: {value!r})")
        elif key in DEPLOYMENT_SPECIFIC:
            check_deployment_specific(name, key, DEPLOYMENT_SPECIFIC[key], env[key], value)
        elif (got := interpolate(env[key])) != value:
            problems.append(f"{name}: {key}={got!r} but ops/stack.env sets {value!r}")
    for key in sorted(set(env) - set(wanted)):
        if name not in COMPOSE_ONLY.get(key, ()):
            problems.append(f"{name}: {key} is not in ops/stack.env nor listed in COMPOSE_ONLY")
    assert not problems, "\n".join(problems)


def test_exception_lists_name_real_settings(native: dict[str, str]) -> None:
    stale = set(DEPLOYMENT_SPECIFIC) - set(native)
    assert not stale, f"DEPLOYMENT_SPECIFIC names settings ops/stack.env no longer sets: {stale}"
    twice = set(COMPOSE_ONLY) & set(native)
    assert not twice, f"COMPOSE_ONLY names settings ops/stack.env sets (compare them): {twice}"


def test_ports_and_health_checks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port} not on 127.0.0.1 only"
    for name, key in PUBLISHED.items():
        inside = interpolate(environment(services[name])[key])
        published = [str(p).rsplit(":", 1)[-1] for p in services[name]["ports"]]
        assert published == [inside], f"{name}: publishes {published}, listens on {key}={inside}"
    sidecar = " ".join(services["signalops-sidecar"]["healthcheck"]["test"])
    assert "/health'" in sidecar, f"signalops-sidecar: health check is not on /health: {sidecar}"
    mlflow = services["mlflow"]["healthcheck"]["test"]
    assert mlflow[:2] == ["CMD", "python"], f"mlflow: check with the image's python: {mlflow}"


def test_databases_exist(services: dict[str, dict[str, Any]], native: dict[str, str]) -> None:
    assert set(DATABASE_URLS) == set(DATABASES)
    created = {interpolate(services["postgres"]["environment"]["POSTGRES_DB"])}
    script = " ".join(map(str, services["init-db"]["command"]))
    created |= set(re.findall(r"'(\w+)'", re.findall(r"CREATE DATABASE.*", script)[0]))
    for db, (key, name) in DATABASE_URLS.items():
        assert native[key].endswith(f"/{native['STACK_DB_PREFIX']}_{db}"), f"native {key}"
        url = interpolate(environment(services[name])[key])
        assert urlsplit(url).path.lstrip("/") in created, f"{name}: {key}: not created by compose"


def test_mlflow_image_pins_the_driver() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    dockerfile = (REPO / "ops" / "mlflow" / "Dockerfile").read_text()
    assert f"psycopg2-binary=={pins['psycopg2-binary']}" in dockerfile


def test_env_example_lists_every_variable(compose: dict[str, Any]) -> None:
    listed = set(re.findall(r"^#?\s*(\w+)=", (REPO / ".env.example").read_text(), re.M))
    missing = variables(compose) - listed
    assert not missing, f".env.example lacks variables docker-compose.yaml reads: {missing}"
