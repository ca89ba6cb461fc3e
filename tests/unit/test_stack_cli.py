"""The supervisor's own checks (no services): the Procfile parser, optional services and
the port pre-flight."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from signalops.stack.definition import StackError, enabled, read_procfile, services
from signalops.stack.provision import PORTS, check_ports


def _free_ports() -> dict[str, str]:
    env = {}
    for key in PORTS:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            env[key] = str(s.getsockname()[1])
    return env


def test_a_busy_port_is_named_before_anything_starts() -> None:
    env = _free_ports()
    check_ports(env)  # all free: no error
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env["AIRFLOW__API__PORT"] = str(holder.getsockname()[1])
        with pytest.raises(StackError, match=rf"{env['AIRFLOW__API__PORT']}: the Airflow api"):
            check_ports(env)


def test_procfile_lines_are_parsed_in_order_and_bad_ones_named(tmp_path: Path) -> None:
    good = tmp_path / "Procfile"
    good.write_text("# comment\n\nweb: python -m http.server\nworker:  airflow celery worker\n")
    assert [(s.name, s.command) for s in read_procfile(good)] == [
        ("web", "python -m http.server"),
        ("worker", "airflow celery worker"),
    ]
    bad = tmp_path / "Bad"
    bad.write_text("web: a\nno command here\n")
    with pytest.raises(StackError, match=r"Bad:2: expected 'name: command'"):
        read_procfile(bad)
    twice = tmp_path / "Twice"
    twice.write_text("web: a\nweb: b\n")
    with pytest.raises(StackError, match="used twice"):
        read_procfile(twice)


def _path_with(tmp_path: Path, *programs: str) -> str:
    """A PATH holding only executables named ``programs`` (that do nothing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in programs:
        program = bin_dir / name
        program.write_text("#!/bin/sh\nexit 0\n")
        program.chmod(0o755)
    return str(bin_dir)


def test_prometheus_is_optional(tmp_path: Path) -> None:
    prometheus = next(s for s in read_procfile() if s.name == "prometheus")
    without, with_it = _path_with(tmp_path / "a"), _path_with(tmp_path / "b", "prometheus")
    assert enabled({"PATH": with_it, "STACK_PROMETHEUS": "auto"}, prometheus)
    assert not enabled({"PATH": without, "STACK_PROMETHEUS": "auto"}, prometheus)
    assert not enabled({"PATH": with_it, "STACK_PROMETHEUS": "false"}, prometheus)
    assert enabled({"PATH": with_it, "STACK_PROMETHEUS": "true"}, prometheus)
    with pytest.raises(StackError, match=r"STACK_PROMETHEUS=true but `prometheus` is not on PATH"):
        enabled({"PATH": without, "STACK_PROMETHEUS": "true"}, prometheus)
    with pytest.raises(StackError, match="expected auto, true or false"):
        enabled({"PATH": with_it, "STACK_PROMETHEUS": "sometimes"}, prometheus)
    names = [s.name for s in services({"PATH": without, "STACK_PROMETHEUS": "auto"})]
    assert "prometheus" not in names and "signalops-exporter" in names
    names = [s.name for s in services({"PATH": with_it, "STACK_PROMETHEUS": "auto"})]
    assert names[-1] == "prometheus"


def test_the_port_of_a_service_not_run_is_not_checked(tmp_path: Path) -> None:
    env = _free_ports()
    with socket.socket() as holder:  # e.g. the Debian package's own Prometheus on :9090
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env["PROMETHEUS_PORT"] = str(holder.getsockname()[1])
        env["PATH"] = _path_with(tmp_path, "prometheus")
        check_ports({**env, "STACK_PROMETHEUS": "false"})
        with pytest.raises(StackError, match=rf"{env['PROMETHEUS_PORT']}: Prometheus"):
            check_ports({**env, "STACK_PROMETHEUS": "auto"})
