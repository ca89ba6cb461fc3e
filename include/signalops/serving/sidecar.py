"""What a sidecar worker process holds: the model pool, the online features, the risk
guard, the prediction log, metrics and dependency states, and the alerts it raises."""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from signalops.alerts.ledger import notify
from signalops.config import Settings
from signalops.serving.errors import NotReady, UnknownModel, UnknownVersion
from signalops.serving.failures import FailureCounts
from signalops.serving.health import Dependency, first_line, is_outage
from signalops.serving.online import OnlineFeatures
from signalops.serving.pool import LoadedModel, ModelPool, SignalModels
from signalops.serving.scoring import Scorer
from signalops.serving.shadow import ShadowScorer

log = logging.getLogger(__name__)
# A version that failed to load alerts once (per version, across workers) in this long.
LOAD_ALERT_WINDOW = timedelta(days=30)


class Sidecar:
    """Everything a worker process holds: models, features, risk state, log, metrics."""

    def __init__(self, settings: Settings, start_background: bool = True):
        from signalops.serving.metrics import Metrics
        from signalops.serving.predlog import PredictionLogClient
        from signalops.serving.risk import RiskGuard
        from signalops.serving.risk_state import (
            CachedRiskState,
            LocalRiskState,
            RedisRiskState,
            RiskState,
        )

        self.settings = settings
        self.cfg = settings.serving
        self.signals = list(self.cfg.signals or (settings.signal_name,))
        self.ensembles = {e.name: e for e in self.cfg.ensembles}
        for ensemble in self.cfg.ensembles:  # members are served models too
            self.signals += [m for m in ensemble.members if m not in self.signals]
        self.metrics = Metrics()
        # Alerts are sent from this thread: never on a request's path, nor the log writer's.
        self._alerts = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alerts")
        self.pool = ModelPool(settings, self.signals, on_alert=self._load_failed)
        self.predlog = PredictionLogClient(
            settings.warehouse_url,
            settings.state_dir / "serving" / "spill",
            self.cfg.log_batch_size,
            self.cfg.log_flush_interval_s,
            on_stats=self._log_stats,
        )
        self.failures = FailureCounts(settings.warehouse_url, start=start_background)
        redis_url = settings.online_store.redis_url
        store = "Redis" if redis_url else "the warehouse database"
        self.dependencies = {
            d.name: d
            for d in (
                Dependency("online_store", f"the online feature store ({store})"),
                Dependency(
                    "risk_state", f"the risk state store ({store if redis_url else 'in-process'})"
                ),
                Dependency("registry", "the model registry (MLflow)"),
                Dependency("prediction_log", "the prediction log database"),
            )
        }
        if not redis_url:
            self.dependencies["risk_state"].ok()  # in this process: cannot be unreachable
        state: RiskState = (
            CachedRiskState(
                RedisRiskState(redis_url, settings.online_store.key_prefix),
                health=self.dependencies["risk_state"],
            )
            if redis_url
            else LocalRiskState()
        )
        self.risk = RiskGuard(self.cfg.risk, state)
        self.online = OnlineFeatures(settings, self.dependencies["online_store"])
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:12]  # unique per process start
        self.scorer = Scorer(self)
        self.shadow = ShadowScorer(self.scorer)
        self._dead_alerted, self._dead_alert_at = 0, 0.0  # at most one alert a minute
        self._spilled_seen = self._replayed_seen = 0
        self._spilling = False  # an episode of the prediction log spilling to disk
        self.start_background = start_background

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Create the tables this sidecar writes (so that readers of ``predictions`` never
        meet a missing table once it is ready), then load the models."""
        from signalops.warehouse import Warehouse

        warehouse = Warehouse(self.settings.warehouse_url)
        try:
            warehouse.create_all()
        except Exception as exc:  # down at start (the log spills; its writer creates them
            # later), or another worker creating them at the same moment
            if is_outage(exc):
                self.dependencies["prediction_log"].failed(exc)
            else:
                log.warning("warehouse tables not created at start: %s", first_line(exc))
        finally:
            warehouse.dispose()
        try:
            self.pool.refresh()
        except Exception as exc:  # registry down at start: not ready until a poll succeeds
            log.error("model pool: first load failed: %s", exc)
        if self.start_background:
            self.pool.start(self.cfg.poll_interval_s)

    def next_id(self) -> str:
        """A request id unique across processes and restarts, without os.urandom per call."""
        return f"{self._id_prefix}-{next(self._ids)}"

    def stop(self) -> None:
        self.pool.stop()
        self._alerts.shutdown(wait=True)  # alerts already raised are still sent
        self.shadow.close()
        self.predlog.close()
        self.failures.close()
        self.metrics.close()
        close = getattr(self.risk.state, "close", None)
        if close is not None:
            close()
        self.online.close()

    def _log_stats(self, stats: dict[str, Any]) -> None:
        """The writer's figures, about once a second: metrics, the log's health, and an
        alert when rows were refused by the database (dead-lettered)."""
        self.metrics.log_depth.set(stats.get("depth", 0))
        self.metrics.spilled.set(stats.get("spilled", 0))
        with contextlib.suppress(Exception):  # the risk store is down: its dependency says so
            self._risk_tick(datetime.now(UTC))
        self._spill_alerts(int(stats.get("spilled", 0)), int(stats.get("replayed", 0)))
        self.metrics.reloads.set(self.pool.stats.reloads)
        dead = int(stats.get("dead_lettered", 0))
        self.metrics.dead_letters.set(dead)
        log_db = self.dependencies["prediction_log"]
        if stats.get("db_ok", True):
            log_db.ok()
        else:  # rows spill to disk meanwhile: nothing is lost, nothing is refused
            log_db.failed(ConnectionError("the prediction log database cannot be written"))
        if dead > self._dead_alerted and time.time() - self._dead_alert_at >= 60:
            new, self._dead_alerted, self._dead_alert_at = (
                dead - self._dead_alerted,
                dead,
                time.time(),
            )
            self._alert(
                "signalops sidecar: predictions dead-lettered",
                f"{new} prediction row(s) refused by the warehouse database were moved to "
                "the sidecar's dead-letter file (serving/ in its state directory) "
                f"(last: {stats.get('last_dead_letter')}). The other rows were logged.",
                kind="predictions_dead_lettered",
                key=self.settings.signal_name,
                window=timedelta(minutes=1),
            )

    def _spill_alerts(self, spilled: int, replayed: int) -> None:
        """The prediction log started spilling to disk (the database cannot be written), and
        later replayed the spill: one alert each per episode. The ledger dedups across
        workers; this process's own episode flag covers the outage itself, when the ledger
        (in that same database) cannot be read."""
        if spilled > self._spilled_seen:
            if not self._spilling:
                self._spilling = True
                self._alert(
                    "signalops sidecar: prediction log spilling to disk",
                    f"The warehouse database cannot be written: {spilled - self._spilled_seen} "
                    "prediction row(s) went to spill files in the sidecar's state directory "
                    "(serving/spill); they are replayed when the database answers again. "
                    "Nothing is lost.",
                    kind="predictions_spilling",
                    key=self.settings.signal_name,
                    window=timedelta(hours=1),
                    severity="warning",
                )
            self._spilled_seen = spilled
        if replayed > self._replayed_seen:
            # the end of this episode, or a spill an earlier process left (first replay seen)
            if self._spilling or self._replayed_seen == 0:
                self._spilling = False
                self._alert(
                    "signalops sidecar: spilled predictions replayed",
                    f"The warehouse database is back: {replayed - self._replayed_seen} spilled "
                    "prediction row(s) were written to the prediction log.",
                    kind="predictions_replayed",
                    key=self.settings.signal_name,
                    window=timedelta(minutes=10),
                    severity="info",
                )
            self._replayed_seen = replayed

    def _load_failed(self, title: str, text: str, version_key: str) -> None:
        """A version failed to load: one alert per version, whichever worker saw it first."""
        self._alert(
            title, text, kind="model_load_failed", key=version_key, window=LOAD_ALERT_WINDOW
        )

    def _alert(
        self,
        title: str,
        text: str,
        *,
        kind: str,
        key: str,
        window: timedelta,
        severity: str = "error",
    ) -> None:
        """Through the alert ledger (deduplicated across this server's workers), sent from
        the alert thread: never on a request's path, nor on the prediction log's."""
        from signalops.alerts import Alert

        alert = Alert(
            title=title,
            text=text,
            severity=severity,  # type: ignore[arg-type]
            fields={"signal": self.settings.signal_name, "sidecar pid": str(os.getpid())},
            link=self.settings.signal_page_url(),
        )
        # notify never raises: the alert thread survives a broken channel
        self._alerts.submit(notify, alert, self.settings, kind=kind, key=key, window=window)

    # -- models and risk ---------------------------------------------------------------

    def models_of(self, signal: str) -> SignalModels:
        models = self.pool.models.get(signal)
        if models is None:
            raise UnknownModel(f"unknown signal {signal!r}; served: {self.signals}")
        if models.champion is None:
            raise NotReady(f"no model loaded yet for {signal!r}")
        return models

    def record_trade(self, pnl: float, symbol: str | None = None) -> dict[str, float]:
        now = datetime.now(UTC)
        risk = self.risk
        state = self.dependencies["risk_state"].call(lambda: risk.trade_result(pnl, now, symbol))
        for trip in risk.trips(state):
            # Noted once across workers: the one that notes a trip sends its one alert.
            if trip.tripped_at or not risk.state.mark_tripped(trip.symbol, now.timestamp()):
                continue
            self.metrics.breaker_open.set(1)
            cooldown = self.cfg.risk.breaker_cooldown_s
            until = (
                f"for {cooldown:g} s (serving.risk.breaker_cooldown_s)"
                if cooldown is not None
                else "until POST /v1/admin/risk/reset"
                + (" or the next trading day" if "daily loss" in trip.reason else "")
            )
            whose = f"{trip.symbol}'s" if trip.symbol else "all"
            self._alert(
                "signalops: risk circuit breaker tripped",
                f"{trip.reason}. {whose} BUY/SELL signals are held {until}. "
                "GET /v1/risk/summary shows the state.",
                kind="risk_breaker_tripped",
                key=f"{self.settings.signal_name}:{trip.symbol or '*'}:{now.timestamp():.3f}",
                window=timedelta(days=1),
            )
        return {k: float(v) for k, v in state.items()}

    def _risk_tick(self, now: datetime) -> None:
        """About once a second: the breaker gauge, and breakers whose cooldown has run
        closed (by one worker; that one says so)."""
        for trip in self.risk.due_cooldowns(now):
            self._alert(
                "signalops: risk circuit breaker closed after its cooldown",
                f"{trip.reason} (tripped {datetime.fromtimestamp(trip.tripped_at, UTC):%H:%M:%S}"
                f" UTC). {'Its' if trip.symbol else 'All'} BUY/SELL signals flow again; its "
                "losing streak, drawdown and the day's loss count from now.",
                kind="risk_breaker_reset",
                key=f"{self.settings.signal_name}:{trip.symbol or '*'}:{trip.tripped_at:.3f}",
                window=timedelta(days=1),
                severity="info",
            )
        state = self.risk.state.get(self.risk.day(now))
        self.metrics.breaker_open.set(1 if self.risk.trips(state) else 0)

    def risk_summary(self) -> dict[str, Any]:
        now = datetime.now(UTC)
        return self.dependencies["risk_state"].call(lambda: self.risk.summary(now))

    def reset_risk(self) -> None:
        now = datetime.now(UTC)
        risk = self.risk
        trips = self.dependencies["risk_state"].call(
            lambda: risk.trips(risk.state.get(risk.day(now)))
        )
        self.dependencies["risk_state"].call(lambda: risk.reset(now))
        self.metrics.breaker_open.set(0)
        if trips:  # each trip alerted under its own key: the next trip is a new episode
            was = "; ".join(t.reason for t in trips)
            self._alert(
                "signalops: risk circuit breaker reset",
                f"The risk state of {risk.day(now)} was reset by an admin "
                f"(was: {was}); BUY/SELL signals flow again.",
                kind="risk_breaker_reset",
                key=f"{self.settings.signal_name}:{now.isoformat(timespec='seconds')}",
                window=timedelta(minutes=1),
                severity="info",
            )

    def dependency_states(self) -> dict[str, Any]:
        registry = self.dependencies["registry"]
        since_poll = time.time() - self.pool.stats.last_poll
        if self.pool.stats.last_poll and since_poll <= 3 * self.cfg.poll_interval_s + 5:
            registry.ok()
        elif self.pool.stats.last_error:  # no good poll for three intervals
            registry.failed(ConnectionError(self.pool.stats.last_error))
        return {name: dep.describe() for name, dep in self.dependencies.items()}

    def pinned_model(self, signal: str, version: str) -> LoadedModel:
        """A version a caller asked for by number: one the pool holds (champion, challenger
        or a recently served one), so that callers of an older input schema keep working
        while they move."""
        model = self.pool.get_version(signal, version)
        if model is None:
            held = sorted(self.pool.loaded_versions(signal), key=int)
            raise UnknownVersion(f"{signal} v{version} is not loaded here; loaded versions: {held}")
        return model
