"""The exporter's Prometheus collector: every gauge family, read afresh on each scrape.

``SignalCollector`` opens the warehouse (once, and only when its file exists), builds each
source's families (``signalops.cockpit.exporter_gauges``) and reports per source whether it
could be read. ``collector_for`` keeps one collector per settings, so that scrapes share a
warehouse engine and an alias cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from signalops.cockpit.exporter_gauges import (
    alert_gauges,
    alias_gauge,
    dag_age_gauge,
    drift_gauges,
    live_gauges,
    rollout_gauges,
    source_up_gauge,
)
from signalops.cockpit.exporter_sources import Aliases, CachedAliases, DagAges
from signalops.config import Settings
from signalops.warehouse import Warehouse, drift_checks_table, rollouts_table, table_names
from signalops.warehouse import drift as drift_rows
from signalops.warehouse import rollouts as rollout_rows

log = logging.getLogger(__name__)


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
        from signalops.cockpit.state_warehouse import LIVE_WINDOW

        self.settings = settings
        self.dag_ages = dag_ages
        self.aliases = aliases
        self.live_window = live_window or LIVE_WINDOW
        self.clock = clock
        self._warehouse: Warehouse | None = None
        self._lock = threading.Lock()

    def _open(self) -> Warehouse | None:
        from signalops.cockpit.state_warehouse import open_warehouse

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
        up = source_up_gauge()
        families: list[Metric] = []
        signals = list(dict.fromkeys([self.settings.signal_name, *self.settings.serving.signals]))
        warehouse = self._open()
        if warehouse is not None:
            try:
                with warehouse.connect() as conn:
                    tables = table_names(conn)
                    families += drift_gauges(conn, tables)
                    families += rollout_gauges(conn, tables)
                    families += live_gauges(conn, tables, self.clock(), self.live_window)
                    families += alert_gauges(conn, tables)
                    if rollouts_table.name in tables:
                        signals += rollout_rows.signal_names(conn)
                    if drift_checks_table.name in tables:
                        signals += drift_rows.signal_names(conn)
                up.add_metric(["warehouse"], 1)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("exporter: warehouse not readable: %s", exc)
                up.add_metric(["warehouse"], 0)
        if self.aliases is not None:
            families.append(alias_gauge(self.aliases, list(dict.fromkeys(signals)), up))
        if self.dag_ages is not None:
            families.append(dag_age_gauge(self.dag_ages, up))
        yield from (f for f in families if f.samples)
        yield up


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
                aliases=CachedAliases(settings) if aliases else None,
            )
        return found
