"""The supervisor: runs the stack's services the way compose would (``supervise``).

Each Procfile line runs in its own process group, started in file order, restarted when it
exits (``restart: always``, backing off 1 s .. 30 s), logged to
``<STACK_DIR>/logs/<name>.log``. A ``<STACK_DIR>/control/<name>.hold`` file holds that
service down until it is removed (``stop`` / ``start``). SIGTERM stops them all in reverse
order (SIGTERM, then SIGKILL after ``STOP_GRACE_S``).

``<STACK_DIR>/processes.json`` (the supervisor's pid; each service's pid, starts, held) is
how the other commands see the running stack: ``read_state``. ``kill_service`` kills one
service and everything it started, as ``docker kill`` would; the supervisor restarts it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from signalops.stack.definition import REPO, Service, StackError

STOP_GRACE_S = 20.0


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


def read_state(env: Mapping[str, str]) -> dict | None:
    """The running supervisor's processes.json; None when no supervisor runs."""
    path = Path(env["STACK_DIR"]) / "processes.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if alive(state.get("supervisor")) else None


def alive(pid: object) -> bool:
    """Whether ``pid`` (a process id, or anything else: False) is a live process."""
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
