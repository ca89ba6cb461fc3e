"""The supervisor's own checks (no services): the Procfile parser and the port pre-flight."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from signalops.stack import PORTS, StackError, check_ports, read_procfile


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
