"""Signal-level gauges for Prometheus, read from the warehouse on every scrape.

The sidecar exports what it serves (requests, latency, predictions by version and role, the
risk breaker: ``signalops.serving.metrics``); this exporter adds what the pipeline decided,
from one place: the newest drift check per signal, the current rollout (step, weight,
status), live accuracy and log loss per version over matured outcomes, alert counts by kind
and status, the model aliases, and the age of each DAG's last successful run.

Served twice: by the Signals-page plugin in the Airflow api-server at
``/signalops/metrics`` (``metrics_payload``), where Airflow's metadata DB gives the DAG
ages; and standalone, ``python -m signalops.cockpit.exporter`` (what Prometheus scrapes in
docker-compose's "observability" profile and ``make stack``; it listens on ``EXPORTER_HOST``
: ``EXPORTER_PORT``, default 127.0.0.1:9108; ``--airflow`` reads the DAG ages from Airflow's
metadata DB as configured by the environment). Every scrape is a handful of bounded queries
on indexed columns; an empty deployment (no warehouse file, no tables, no MLflow store)
yields no samples, never an error. docs/observability.md lists every gauge.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import sqlalchemy as sa
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from signalops.config import Settings, as_utc, load_settings
from signalops.evaluation import metrics as ml
from signalops.registry import Registry
from signalops.warehouse import (
    Warehouse,
    alerts_table,
    drift_checks_table,
    outcomes_table,
    rollouts_table,
    table_names,
)
from signalops.warehouse import alerts as alert_rows
from signalops.warehouse import drift as drift_rows
from signalops.warehouse import outcomes as outcome_rows
from signalops.warehouse import rollouts as rollout_rows

log = logging.getLogger(__name__)

PREFIX = "signalops_"
ROLLOUT_STATUSES = (
    "active",
    "promoting",
    "promoted",
    "rolling_back",
    "rolled_back",
    "superseded",
    "manual",
)
ALIAS_TTL_S = 60.0  # registry aliases change a few times a day: one MLflow call a minute
# An MLflow server that is down makes its client retry for minutes: a scrape waits this long
# for the aliases, then reports the registry down (the fetch goes on in the background).
ALIAS_TIMEOUT_S = 5.0
HOST_ENV, PORT_ENV = "EXPORTER_HOST", "EXPORTER_PORT"  # the standalone server's address
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9108

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


class _CachedAliases:
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
        from signalops.cockpit.state import mlflow_store_exists

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


class SignalCollector(Collector):
    """Reads the warehouse (and, when given, the registry aliases and DAG ages) on collect."""

    def __init__(
        self,
        settings: Settings,
        *,
        dag_ages: DagAges | None = None,
        aliases: Aliases | None = None,
        live_window: timedelta | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        from signalops.cockpit.state import LIVE_WINDOW

        self.settings = settings
        self.dag_ages = dag_ages
        self.aliases = aliases
        self.live_window = live_window or LIVE_WINDOW
        self.clock = clock
        self._warehouse: Warehouse | None = None
        self._lock = threading.Lock()

    def _open(self) -> Warehouse | None:
        from signalops.cockpit.state import open_warehouse

        with self._lock:
            if self._warehouse is None:
                self._warehouse = open_warehouse(self.settings)  # None: no SQLite file yet
            return self._warehouse

    def close(self) -> None:
        with self._lock:
            if self._warehouse is not None:
                self._warehouse.dispose()
                self._warehouse = None

    def describe(self) -> list[Metric]:
        return []  # collected on scrape only: registering must not query anything

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{PREFIX}exporter_source_up",
            "1 when the source could be read on this scrape (0: see the exporter's log)",
            labels=["source"],
        )
        families: list[Metric] = []
        signals = list(dict.fromkeys([self.settings.signal_name, *self.settings.serving.signals]))
        warehouse = self._open()
        if warehouse is not None:
            try:
                with warehouse.connect() as conn:
                    tables = table_names(conn)
                    families += self._drift(conn, tables)
                    families += self._rollouts(conn, tables)
                    families += self._live(conn, tables)
                    families += self._alerts(conn, tables)
                    if rollouts_table.name in tables:
                        signals += rollout_rows.signal_names(conn)
                    if drift_checks_table.name in tables:
                        signals += drift_rows.signal_names(conn)
                up.add_metric(["warehouse"], 1)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("exporter: warehouse not readable: %s", exc)
                up.add_metric(["warehouse"], 0)
        if self.aliases is not None:
            families.append(self._aliases(list(dict.fromkeys(signals)), up))
        if self.dag_ages is not None:
            families.append(self._dag_ages(up))
        yield from (f for f in families if f.samples)
        yield up

    # -- sources ------------------------------------------------------------------------

    def _drift(self, conn: sa.Connection, tables: set[str]) -> list[Metric]:
        """The newest window's check per signal (the newest check when windows tie)."""
        from signalops.drift.monitor import SEVERITIES

        if drift_checks_table.name not in tables:
            return []
        rows = drift_rows.newest_per_signal(conn)
        latest = {r.signal_name: r for r in rows}  # ordered by checked_at: the last wins
        severity = GaugeMetricFamily(
            f"{PREFIX}drift_severity",
            "Severity of the newest drift check ("
            + ", ".join(f"{i} {name}" for i, name in enumerate(SEVERITIES))
            + ")",
            labels=["signal", "version"],
        )
        share = GaugeMetricFamily(
            f"{PREFIX}drift_share_drifted",
            "Share of features drifted in the newest drift check's window",
            labels=["signal", "version"],
        )
        window_end = GaugeMetricFamily(
            f"{PREFIX}drift_window_end_timestamp_seconds",
            "End of the newest drift check's window (Unix time)",
            labels=["signal", "version"],
        )
        for name, r in sorted(latest.items()):
            labels = [str(name), str(r.model_version)]
            severity.add_metric(
                labels, SEVERITIES.index(r.severity) if r.severity in SEVERITIES else 0
            )
            share.add_metric(labels, float(r.share_drifted))
            window_end.add_metric(labels, _epoch(r.window_end))
        return [severity, share, window_end]

    def _rollouts(self, conn: sa.Connection, tables: set[str]) -> list[Metric]:
        """Each signal's current rollout: the active one, else the newest."""
        if rollouts_table.name not in tables:
            return []
        current = rollout_rows.current_per_signal(conn)
        step = GaugeMetricFamily(
            f"{PREFIX}rollout_step",
            "Step of the current rollout (0: shadow); its challenger is the version",
            labels=["signal", "version", "champion"],
        )
        weight = GaugeMetricFamily(
            f"{PREFIX}rollout_weight",
            "Share of traffic the current rollout's challenger gets (0..1)",
            labels=["signal", "version", "champion"],
        )
        status = GaugeMetricFamily(
            f"{PREFIX}rollout_status",
            "1 for the current rollout's status, 0 for the others (a state set)",
            labels=["signal", "version", "status"],
        )
        for name, r in sorted(current.items()):
            labels = [str(name), str(r.challenger_version), str(r.champion_version or "")]
            step.add_metric(labels, int(r.step))
            weight.add_metric(labels, float(r.weight))
            for state in dict.fromkeys([*ROLLOUT_STATUSES, str(r.status)]):
                status.add_metric([*labels[:2], state], 1 if state == r.status else 0)
        return [step, weight, status]

    def _live(self, conn: sa.Connection, tables: set[str]) -> list[Metric]:
        """Accuracy and log loss per version over the outcomes matured in the live window
        (the formulas of ``signalops.evaluation.metrics``, as the canary's guards use)."""
        if outcomes_table.name not in tables:
            return []
        rows = outcome_rows.since(conn, self.clock() - self.live_window)
        grouped: dict[tuple[str, str], list[tuple[float, int]]] = {}
        for r in rows:
            grouped.setdefault((str(r[0]), str(r[1])), []).append((r[2], r[3]))
        window = f"{self.live_window.total_seconds():.0f} s"
        accuracy = GaugeMetricFamily(
            f"{PREFIX}live_accuracy",
            f"Accuracy of the version's matured predictions of the last {window}",
            labels=["signal", "version"],
        )
        log_loss = GaugeMetricFamily(
            f"{PREFIX}live_log_loss",
            f"Log loss of the version's matured predictions of the last {window}",
            labels=["signal", "version"],
        )
        count = GaugeMetricFamily(
            f"{PREFIX}live_outcomes",
            f"Matured predictions (outcomes) of the version in the last {window}",
            labels=["signal", "version"],
        )
        for (signal, version), values in sorted(grouped.items()):
            p = np.array([v[0] for v in values], dtype=np.float64)
            y = np.array([v[1] for v in values], dtype=np.float64)
            accuracy.add_metric([signal, version], ml.accuracy(y, p))
            log_loss.add_metric([signal, version], ml.log_loss(y, p))
            count.add_metric([signal, version], len(values))
        return [accuracy, log_loss, count]

    def _alerts(self, conn: sa.Connection, tables: set[str]) -> list[Metric]:
        if alerts_table.name not in tables:
            return []
        family = GaugeMetricFamily(
            f"{PREFIX}alerts",
            "Alerts in the ledger (one per dedup key) by kind and latest status",
            labels=["kind", "status"],
        )
        for kind, status, n in alert_rows.count_by_kind_status(conn):
            family.add_metric([str(kind), str(status)], int(n))
        return [family]

    def _aliases(self, signals: list[str], up: GaugeMetricFamily) -> Metric:
        family = GaugeMetricFamily(
            f"{PREFIX}model_alias",
            "1 for each registry alias (champion, challenger, previous-champion) and its version",
            labels=["signal", "alias", "version"],
        )
        assert self.aliases is not None
        try:
            for signal in signals:
                for alias, version in sorted(self.aliases(signal).items()):
                    family.add_metric([signal, alias, str(version)], 1)
            up.add_metric(["registry"], 1)
        except Exception as exc:  # MLflow down must not take the warehouse gauges with it
            log.warning("exporter: registry aliases not readable: %s", exc)
            up.add_metric(["registry"], 0)
        return family

    def _dag_ages(self, up: GaugeMetricFamily) -> Metric:
        family = GaugeMetricFamily(
            f"{PREFIX}dag_last_success_age_seconds",
            "Seconds since the DAG's newest successful run ended (Airflow metadata DB)",
            labels=["dag_id"],
        )
        assert self.dag_ages is not None
        try:
            for dag_id, age in sorted(self.dag_ages().items()):
                family.add_metric([dag_id], max(0.0, float(age)))
            up.add_metric(["airflow"], 1)
        except Exception as exc:  # a metadata DB hiccup must not fail the scrape
            log.warning("exporter: Airflow DAG runs not readable: %s", exc)
            up.add_metric(["airflow"], 0)
        return family


def _epoch(value: Any) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).timestamp()


# ---------------------------------------------------------------------------------------
# serving the payload

_collectors: dict[tuple[Any, ...], SignalCollector] = {}
_collectors_lock = threading.Lock()


def collector_for(
    settings: Settings, *, dag_ages: DagAges | None = None, aliases: bool = True
) -> SignalCollector:
    """One collector (one warehouse engine, one alias cache) per settings, kept."""
    key = (settings.warehouse_url, settings.mlflow_tracking_uri, dag_ages, aliases)
    with _collectors_lock:
        found = _collectors.get(key)
        if found is None:
            found = _collectors[key] = SignalCollector(
                settings,
                dag_ages=dag_ages,
                aliases=_CachedAliases(settings) if aliases else None,
            )
        return found


def render(collector: SignalCollector) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def metrics_payload(
    settings: Settings, *, dag_ages: DagAges | None = None, aliases: bool = True
) -> tuple[bytes, str]:
    """The exposition body and its content type. Inside Airflow (the plugin) the DAG ages
    come from its metadata DB unless ``dag_ages`` is given; elsewhere they are omitted."""
    if dag_ages is None and in_airflow():
        dag_ages = airflow_dag_ages
    return render(collector_for(settings, dag_ages=dag_ages, aliases=aliases))


def serve(
    settings: Settings,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    dag_ages: DagAges | None = None,
    aliases: bool = True,
) -> ThreadingHTTPServer:
    """An HTTP server answering ``/metrics`` (and ``/signalops/metrics``, ``/health``);
    the caller runs ``serve_forever`` and ``shutdown``."""
    collector = collector_for(settings, dag_ages=dag_ages, aliases=aliases)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in ("/metrics", "/signalops/metrics"):
                try:
                    body, content_type = render(collector)
                    status = 200
                except Exception as exc:  # a bad scrape is a 500 with the reason, not a crash
                    log.exception("exporter: scrape failed")
                    body, content_type, status = str(exc).encode(), "text/plain", 500
            elif path == "/health":
                body, content_type, status = b"ok\n", "text/plain", 200
            else:
                body, content_type, status = b"not found\n", "text/plain", 404
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("exporter: " + format, *args)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m signalops.cockpit.exporter", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--host",
        default=os.environ.get(HOST_ENV) or DEFAULT_HOST,
        help=f"address to listen on (default: ${HOST_ENV}, else {DEFAULT_HOST})",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_ENV) or DEFAULT_PORT),
        help=f"port to listen on (default: ${PORT_ENV}, else {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--airflow",
        action="store_true",
        help="read DAG ages from Airflow's metadata DB (configured by AIRFLOW__* settings)",
    )
    parser.add_argument("--no-registry", action="store_true", help="no MLflow alias gauges")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = load_settings()
    dag_ages = None
    if args.airflow:
        import airflow  # noqa: F401  (importing it configures its ORM from the environment)

        dag_ages = airflow_dag_ages
        # Import Airflow's models now, before any scrape: the alias fetch imports MLflow's SQL
        # store in its own thread, which configures every SQLAlchemy mapper (Airflow's too),
        # and two threads importing Airflow's models that way at once deadlock.
        try:
            airflow_dag_ages()
        except Exception as exc:  # the metadata DB may come up later; the imports are done
            log.warning("exporter: Airflow DAG runs not readable yet: %s", exc)
    server = serve(settings, args.host, args.port, dag_ages=dag_ages, aliases=not args.no_registry)
    log.info("signalops exporter on http://%s:%d/metrics", args.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
