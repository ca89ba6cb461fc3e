"""The production topology as native processes (``make stack`` / ``make stack-down``).

One definition: ``ops/Procfile`` names the long-running services and their commands,
``ops/stack.env`` their settings; docker-compose.yaml runs the same commands with the same
settings. This package is the small supervisor that runs them the way compose would:

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
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from signalops.stack.definition import REPO, StackError, load_env, read_procfile, services
from signalops.stack.health import UP_TIMEOUT_S, health_checks, wait_healthy
from signalops.stack.provision import check_ports, set_up
from signalops.stack.supervisor import Supervisor, alive, kill_service, read_state


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
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
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
