"""The exporter's sources besides the warehouse: Airflow's DAG runs and the model registry.

``airflow_dag_ages`` reads the age of each DAG's last successful run from Airflow's
metadata DB (only where Airflow has configured its ORM: ``in_airflow``). ``CachedAliases``
reads each signal's registry aliases from MLflow, cached for a minute, and never makes a
scrape wait on a hung MLflow server for more than ``ALIAS_TIMEOUT_S``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import sqlalchemy as sa

from signalops.config import Settings, as_utc
from signalops.registry import Registry

ALIAS_TTL_S = 60.0  # registry aliases change a few times a day: one MLflow call a minute
# An MLflow server that is down makes its client retry for minutes: a scrape waits this long
# for the aliases, then reports the registry down (the fetch goes on in the background).
ALIAS_TIMEOUT_S = 5.0

DagAges = Callable[[], Mapping[str, float]]  # dag_id -> seconds since its last success
Aliases = Callable[[str], Mapping[str, str]]  # signal -> {alias: version}


def airflow_dag_ages() -> dict[str, float]:
    """Seconds since each DAG's newest successful run ended, from Airflow's metadata DB.

    Only where Airflow's ORM is configured (the api-server, or ``--airflow``): imports
    Airflow lazily, so the exporter itself never needs it.
    """
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    now = datetime.now(UTC)
    with create_session() as session:
        rows = (
            session.query(DagRun.dag_id, sa.func.max(DagRun.end_date))
            .filter(DagRun.state == DagRunState.SUCCESS, DagRun.end_date.is_not(None))
            .group_by(DagRun.dag_id)
            .all()
        )
    return {
        str(dag_id): (now - as_utc(end)).total_seconds() for dag_id, end in rows if end is not None
    }


def in_airflow() -> bool:
    """True in a process where Airflow has configured its ORM (e.g. the api-server)."""
    airflow_settings = sys.modules.get("airflow.settings")
    return airflow_settings is not None and getattr(airflow_settings, "Session", None) is not None


class CachedAliases:
    """``Registry(settings, signal).aliases()``, cached for ``ttl`` seconds per signal.

    Each fetch runs in a daemon thread; a caller waits at most ``timeout`` seconds for it
    (then ``TimeoutError``), and a fetch still under way is joined, never repeated.
    """

    def __init__(
        self, settings: Settings, ttl: float = ALIAS_TTL_S, timeout: float = ALIAS_TIMEOUT_S
    ):
        self.settings = settings
        self.ttl = ttl
        self.timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}
        self._pending: dict[str, _Fetch] = {}
        self._registries: dict[str, Registry] = {}
        self._lock = threading.Lock()

    def __call__(self, signal: str) -> Mapping[str, str]:
        with self._lock:
            hit = self._cache.get(signal)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            fetch = self._pending.get(signal)
            if fetch is None:
                fetch = self._pending[signal] = _Fetch(lambda: self._fetch(signal))
        if not fetch.done.wait(self.timeout):
            raise TimeoutError(f"the registry did not answer within {self.timeout:.0f} s")
        if fetch.error is not None:
            raise fetch.error
        return fetch.result

    def _fetch(self, signal: str) -> dict[str, str]:
        from signalops.cockpit.state_registry import mlflow_store_exists

        try:
            aliases: dict[str, str] = {}
            if mlflow_store_exists(self.settings):
                registry = self._registries.get(signal)
                if registry is None:
                    registry = self._registries[signal] = Registry(self.settings, signal)
                aliases = registry.aliases()
            with self._lock:
                self._cache[signal] = (time.monotonic(), aliases)
            return aliases
        finally:
            with self._lock:
                self._pending.pop(signal, None)


class _Fetch:
    """One call run in a daemon thread (a hung MLflow call never blocks the exit)."""

    def __init__(self, call: Callable[[], dict[str, str]]):
        self.done = threading.Event()
        self.result: dict[str, str] = {}
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = call()
            except BaseException as exc:  # handed to the waiting scrape
                self.error = exc
            finally:
                self.done.set()

        threading.Thread(target=run, name="signalops-exporter-aliases", daemon=True).start()
