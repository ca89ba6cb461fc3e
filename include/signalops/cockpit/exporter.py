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

This module serves the payload (``metrics_payload``, ``serve``, the ``main`` CLI); the
gauges come from ``exporter_collector`` (the scrape), ``exporter_gauges`` (each source's
families) and ``exporter_sources`` (Airflow's DAG runs, the registry's aliases).
"""

from __future__ import annotations

import argparse
import logging
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from signalops.cockpit.exporter_collector import SignalCollector, collector_for
from signalops.cockpit.exporter_sources import DagAges, airflow_dag_ages, in_airflow
from signalops.config import Settings, load_settings

log = logging.getLogger(__name__)

HOST_ENV, PORT_ENV = "EXPORTER_HOST", "EXPORTER_PORT"  # the standalone server's address
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 9108


def render(collector: SignalCollector) -> tuple[bytes, str]:
    """One scrape of ``collector``: the exposition body and its content type."""
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
