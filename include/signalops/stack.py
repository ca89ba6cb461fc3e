"""The production topology as native processes (``make stack`` / ``make stack-down``).

One definition: ``ops/Procfile`` names the long-running services and their commands,
``ops/stack.env`` their settings; docker-compose.yaml runs the same commands with the same
settings. This module is the small supervisor that runs them the way compose would:

* ``up``: one-shot set-up first (the PostgreSQL databases, ``airflow db migrate``; compose's
  init-db and airflow-init), then the supervisor in the background, then it waits until every
  service passes its health check and prints where they are.
* ``supervise`` (what ``up`` starts): each Procfile line in its own process group, started in
  file order, restarted when it exits (``restart: always``, backing off 1 s .. 30 s), logged to
  ``<stack dir>/logs/<name>.log``. SIGTERM stops them all in reverse order (SIGTERM, then
  SIGKILL after a grace period).
* ``stop NAME`` / ``start NAME``: hold one service down and let it start again (an operator's
  maintenance window; the fault tests use it). ``kill NAME``: kill -9 it and every process it
  started, as ``docker kill`` would; the supervisor restarts it.
* ``down``, ``status``, ``env``.

Optional services (``OPTIONAL``) run only when their switch in ``ops/stack.env`` is on:
Prometheus (``STACK_PROMETHEUS``: ``auto``, the default, starts it where a ``prometheus``
binary is installed) scrapes the sidecar and the signalops exporter with the config that
``set_up`` writes from ``ops/prometheus/prometheus.yml`` (the compose one; targets moved to
the native ports, the same rules).

Machine state lives under ``STACK_DIR`` (default ``.signalops/stack``): processes.json
(names, pids, starts), logs/, secrets.env (generated once, mode 0600, never in the repo).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "ops" / "Procfile"
STACK_ENV = REPO / "ops" / "stack.env"
PROMETHEUS_DIR = REPO / "ops" / "prometheus"  # prometheus.yml (compose's), rules/
DATABASES = ("airflow", "warehouse", "mlflow")  # <prefix>_<name> on STACK_PG
AIRFLOW_INIT = "airflow db migrate"  # compose's airflow-init runs the same command
SECRET_NAMES = ("AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY", "AIRFLOW_FERNET_KEY")
STOP_GRACE_S = 20.0
UP_TIMEOUT_S = 300.0
# Procfile services that run only when their switch (set in ops/stack.env) is on.
OPTIONAL = {"prometheus": "STACK_PROMETHEUS"}
# Where the native Prometheus finds each scrape job of ops/prometheus/prometheus.yml (compose:
# a service name and its container port). Jobs not named here have no native process
# (Airflow's StatsD goes to statsd-exporter, a compose service only) and are left out.
NATIVE_TARGETS = {
    "prometheus": "PROMETHEUS_PORT",
    "signalops-sidecar": "SIGNALOPS_SERVING__PORT",
    "signalops-exporter": "EXPORTER_PORT",
}


class StackError(RuntimeError):
    """The stack could not be set up, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class Service:
    name: str
    command: str


def read_procfile(path: Path = PROCFILE) -> list[Service]:
    """The ``name: command`` lines of a Procfile, in order (comments and blanks skipped)."""
    services: list[Service] = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise StackError(f"{path}:{number}: expected 'name: command', got {raw!r}")
        services.append(Service(name.strip(), command.strip()))
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise StackError(f"{path}: a service name is used twice: {names}")
    return services


def enabled(env: Mapping[str, str], service: Service) -> bool:
    """Whether this stack runs ``service``: always, unless it is OPTIONAL and switched off
    (``auto``: on where its program is on PATH)."""
    switch = OPTIONAL.get(service.name)
    if switch is None:
        return True
    value = env.get(switch, "auto").strip().lower()
    program = shlex.split(service.command)[0]
    found = shutil.which(program, path=env.get("PATH")) is not None
    if value == "auto":
        return found
    if value in ("1", "true", "yes", "on"):
        if not found:
            raise StackError(
                f"{switch}={env[switch]} but `{program}` is not on PATH "
                f"(Debian: apt-get install {program}), or set {switch}=false"
            )
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise StackError(f"{switch}={env[switch]!r}: expected auto, true or false")


def services(env: Mapping[str, str]) -> list[Service]:
    """The Procfile's services this stack runs, in order."""
    return [s for s in read_procfile() if enabled(env, s)]


def stack_dir(env: Mapping[str, str]) -> Path:
    default = Path(env.get("SIGNALOPS_STATE_DIR") or REPO / ".signalops") / "stack"
    return Path(env.get("STACK_DIR") or default).resolve()


def _secrets(directory: Path, env: Mapping[str, str]) -> dict[str, str]:
    """The shared Airflow secrets: from the environment, else generated once and kept."""
    path = directory / "secrets.env"
    kept: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            key, _, value = line.partition("=")
            if key in SECRET_NAMES:
                kept[key] = value
    missing = [k for k in SECRET_NAMES if not env.get(k) and k not in kept]
    if missing:
        from cryptography.fernet import Fernet

        fresh = {
            "AIRFLOW_JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW_API_SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW_FERNET_KEY": Fernet.generate_key().decode(),
        }
        kept.update({k: fresh[k] for k in missing})
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in sorted(kept.items())))
        os.replace(tmp, path)
    return {k: env.get(k) or kept[k] for k in SECRET_NAMES}


def load_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment every service gets: ``base`` (default os.environ) with the secrets,
    then ``ops/stack.env`` sourced by bash on top."""
    env = dict(os.environ if base is None else base)
    directory = stack_dir(env)
    env.update(STACK_DIR=str(directory), STACK_REPO=str(REPO))
    env.update(_secrets(directory, env))
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    script = f"set -euo pipefail; source {shlex.quote(str(STACK_ENV))}; env -0"
    proc = subprocess.run(["bash", "-c", script], env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise StackError(f"{STACK_ENV}: {proc.stderr.decode().strip()}")
    pairs = (item.split("=", 1) for item in proc.stdout.decode().split("\0") if "=" in item)
    return {k: v for k, v in pairs if not k.startswith("BASH_FUNC_") and k != "_"}


# ----------------------------------------------------------------------------------- set-up


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


# ------------------------------------------------------------------------------ supervisor


@dataclass
class Running:
    service: Service
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    started_at: float = 0.0
    next_start: float = 0.0
    backoff_s: float = 1.0
    held: bool = False


@dataclass
class Supervisor:
    env: dict[str, str]
    services: list[Service]
    directory: Path = field(init=False)
    running: dict[str, Running] = field(init=False)
    stopping: bool = False

    def __post_init__(self) -> None:
        self.directory = Path(self.env["STACK_DIR"])
        self.running = {s.name: Running(s) for s in self.services}

    def _start(self, item: Running) -> None:
        log = (self.directory / "logs" / f"{item.service.name}.log").open("ab")
        log.write(f"\n==> {time.strftime('%FT%T')} starting: {item.service.command}\n".encode())
        log.flush()
        item.proc = subprocess.Popen(
            ["bash", "-c", f"exec {item.service.command}"],
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stopped (or killed) as a unit
        )
        log.close()
        item.starts += 1
        item.started_at = time.monotonic()
        self._write_state()

    def _stop(self, item: Running) -> None:
        proc = item.proc
        if proc is None:
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # strays left in its group
        item.proc = None
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "supervisor": os.getpid(),
            "services": {
                name: {
                    "pid": item.proc.pid if item.proc else None,
                    "starts": item.starts,
                    "held": item.held,
                }
                for name, item in self.running.items()
            },
        }
        path = self.directory / "processes.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, path)

    def run(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        control = self.directory / "control"
        control.mkdir(parents=True, exist_ok=True)
        while not self.stopping:
            now = time.monotonic()
            for name, item in self.running.items():
                item.held = (control / f"{name}.hold").exists()
                if item.held:
                    if item.proc is not None:
                        self._stop(item)
                    continue
                if item.proc is not None and item.proc.poll() is not None:
                    rc = item.proc.returncode
                    up_for = now - item.started_at
                    item.backoff_s = 1.0 if up_for > 60 else min(item.backoff_s * 2, 30.0)
                    item.next_start = now + item.backoff_s
                    _note(
                        self.directory,
                        name,
                        f"exited (rc {rc}) after {up_for:.0f} s; "
                        f"restarting in {item.backoff_s:.0f} s",
                    )
                    item.proc = None
                    self._write_state()
                if item.proc is None and now >= item.next_start:
                    self._start(item)
            time.sleep(0.2)
        for item in reversed(list(self.running.values())):
            self._stop(item)
        (self.directory / "processes.json").unlink(missing_ok=True)


def _signal_group(pid: int, sig: int) -> None:
    """Signal a service: its process group and every descendant (Airflow runs each task in
    a process group of its own; a container stop reaches those too)."""
    import psutil

    try:
        family = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        family = [pid]
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    for member in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(member, sig)


def kill_service(env: Mapping[str, str], name: str) -> int:
    """kill -9 one service and everything it started, as `docker kill` would; the supervisor
    restarts it. Returns the killed pid."""
    state = read_state(env)
    pid = ((state or {}).get("services", {}).get(name) or {}).get("pid")
    if not isinstance(pid, int):
        raise StackError(f"{name} is not running")
    _signal_group(pid, signal.SIGKILL)
    return pid


def _note(directory: Path, name: str, text: str) -> None:
    with (directory / "logs" / f"{name}.log").open("a") as out:
        out.write(f"==> {time.strftime('%FT%T')} {text}\n")


# -------------------------------------------------------------------------- health checks


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


def read_state(env: Mapping[str, str]) -> dict | None:
    path = Path(env["STACK_DIR"]) / "processes.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if _alive(state.get("supervisor")) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


# ---------------------------------------------------------------------------------- CLI


def up(env: dict[str, str], timeout_s: float = UP_TIMEOUT_S) -> None:
    if read_state(env) is not None:
        print("the stack is already running")
        wait_healthy(env, timeout_s)
        return
    directory = Path(env["STACK_DIR"])
    started = time.monotonic()
    check_ports(env)
    set_up(env)
    for hold in (directory / "control").glob("*.hold"):
        hold.unlink()
    out = (directory / "logs" / "supervisor.log").open("ab")
    subprocess.Popen(
        [sys.executable, "-m", "signalops.stack", "supervise"],
        env=env,
        cwd=REPO,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while read_state(env) is None:
        if time.monotonic() > deadline:
            raise StackError(f"the supervisor did not start; see {directory}/logs/supervisor.log")
        time.sleep(0.2)
    wait_healthy(env, timeout_s)
    print(f"stack up in {time.monotonic() - started:.0f} s")
    print_status(env)


def down(env: Mapping[str, str], timeout_s: float = 90.0) -> bool:
    state = read_state(env)
    if state is None:
        print("the stack is not running")
        return False
    pid = state["supervisor"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        raise StackError(f"the supervisor (pid {pid}) did not stop in {timeout_s:.0f} s")
    print("stack down")
    return True


def hold(env: Mapping[str, str], name: str, held: bool) -> None:
    names = [s.name for s in read_procfile()]
    if name not in names:
        raise StackError(f"unknown service {name!r}; the Procfile has {names}")
    path = Path(env["STACK_DIR"]) / "control" / f"{name}.hold"
    path.parent.mkdir(parents=True, exist_ok=True)
    if held:
        path.touch()
    else:
        path.unlink(missing_ok=True)


def print_status(env: Mapping[str, str]) -> None:
    state = read_state(env) or {"services": {}}
    checks = health_checks(env)
    for service in services(env):
        info = state["services"].get(service.name, {})
        healthy = "healthy" if checks[service.name]() else "not healthy"
        held = " (held down)" if info.get("held") else ""
        print(
            f"  {service.name:22} pid {info.get('pid')!s:>8}  starts {info.get('starts', 0)}  "
            f"{healthy}{held}"
        )
    print(
        f"  Airflow UI   http://127.0.0.1:{env['AIRFLOW__API__PORT']}  (user admin; password in "
        f"{env['AIRFLOW_HOME']}/simple_auth_manager_passwords.json.generated)"
    )
    print(f"  MLflow       http://127.0.0.1:{env['MLFLOW_PORT']}")
    print(f"  sidecar      http://127.0.0.1:{env['SIGNALOPS_SERVING__PORT']}")
    print(f"  exporter     http://127.0.0.1:{env['EXPORTER_PORT']}/metrics")
    if "prometheus" in {s.name for s in services(env)}:
        print(f"  Prometheus   http://127.0.0.1:{env['PROMETHEUS_PORT']}")
    print(f"  logs         {env['STACK_DIR']}/logs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signalops.stack", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="set up, start in the background, wait until healthy")
    sub.add_parser("down", help="stop every service")
    sub.add_parser("status", help="each service's pid, starts and health")
    sub.add_parser("supervise", help="run the services in the foreground")
    sub.add_parser(
        "env", help="print the services' SIGNALOPS_*/AIRFLOW__*/MLFLOW_*/EXPORTER_* settings"
    )
    for name in ("stop", "start", "kill"):
        helps = {"kill": "kill -9 one service and its children (it is restarted)"}
        sub.add_parser(name, help=helps.get(name, f"{name} one service")).add_argument("service")
    args = parser.parse_args(argv)
    try:
        env = load_env()
        if args.command == "up":
            up(env)
        elif args.command == "down":
            down(env)
        elif args.command == "status":
            print_status(env)
        elif args.command == "supervise":
            Supervisor(env, services(env)).run()
        elif args.command == "env":
            for key in sorted(env):
                if key.startswith(("SIGNALOPS_", "AIRFLOW__", "MLFLOW_", "EXPORTER_")):
                    secret = any(s in key for s in ("SECRET", "FERNET", "TOKEN", "PASSWORD"))
                    print(f"{key}={'***' if secret and env[key] else env[key]}")
        elif args.command == "kill":
            print(f"killed {args.service} (pid {kill_service(env, args.service)})")
        else:
            hold(env, args.service, held=args.command == "stop")
    except StackError as exc:
        print(f"signalops stack: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
