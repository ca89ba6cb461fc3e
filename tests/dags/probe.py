"""The preamble of the import probes (DAG files, the plugin): run in a clean interpreter,
it records the modules loaded so far and makes every socket connection, SQLite connection
and settings read raise, so whatever the probe imports next is caught doing I/O."""

from __future__ import annotations


def probe(baseline: str, what: str, body: str) -> str:
    """A ``python -c`` script: import ``baseline`` (what Airflow itself loads), refuse I/O
    (the error says it happened ``what``), then run ``body``."""
    return f"""
import importlib.util, json, socket, sqlite3, sys
import {baseline}
before = set(sys.modules)
calls = []
def refuse(name):
    def _refuse(*args, **kwargs):
        calls.append(name)
        raise RuntimeError(f"{{name}} {what}")
    return _refuse
socket.socket.connect = refuse("socket.connect")
socket.create_connection = refuse("socket.create_connection")
sqlite3.connect = refuse("sqlite3.connect")
import signalops.config
signalops.config.load_settings = refuse("load_settings")
{body}"""
