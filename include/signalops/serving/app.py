"""The sidecar's HTTP API (ASGI, Starlette routes on uvicorn).

Native ``POST /v1/signals``; the MLflow scoring protocol on ``POST /invocations``; the Open
Inference Protocol (KServe V2) under ``/v2``; ``/health``, ``/ready``, ``/v1/models``,
``/metrics`` (Prometheus); admin routes behind a bearer token. The OpenAPI document is at
``/openapi.json``. Bad input always gets a 4xx whose message says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import itertools
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from signalops.alerts.ledger import notify
from signalops.config import Settings
from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME
from signalops.registry import contracts as c
from signalops.serving import v2
from signalops.serving.health import Dependency, DependencyDown, first_line, is_outage
from signalops.serving.inputs import (
    KEY,
    REQUEST_ID,
    SYMBOL,
    InputError,
    check_pnl,
    check_time,
    check_version,
    column_order,
    distinct_strings,
    finite_matrix,
    media_type_ok,
    records_matrix,
)
from signalops.serving.pool import LoadedModel, ModelPool, SignalModels
from signalops.serving.risk import RiskDecision
from signalops.serving.routing import route

log = logging.getLogger(__name__)
# A version that failed to load alerts once (per version, across workers) in this long.
LOAD_ALERT_WINDOW = timedelta(days=30)


@dataclass
class Scored:
    model: LoadedModel
    role: str
    p: np.ndarray
    final: list[str]
    decisions: list[RiskDecision]
    stamps: list[Any] | None


Provider = Callable[[LoadedModel], tuple[np.ndarray, list[Any] | None]]


class ApiError(InputError):
    """A 4xx/5xx answer with a kind (counted in ``signalops_errors``), status first."""

    def __init__(self, status: int, message: str, kind: str = "bad_request"):
        super().__init__(message, status, kind)


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _inline_stamps(value: Any, rows: int | None) -> list[datetime]:
    """``features_ts`` of inline features: one RFC 3339 time for every row, or one per row
    (``rows`` None: only check the times)."""
    if isinstance(value, list):
        if not value:
            raise ApiError(422, "'features_ts' must be a time or a non-empty list of times")
        stamps = [check_time(v, f"'features_ts'[{i}]") for i, v in enumerate(value)]
        if rows is not None and len(stamps) != rows:
            raise ApiError(422, f"'features_ts' has {len(stamps)} times for {rows} feature rows")
        return stamps
    return [check_time(value, "'features_ts'")] * (rows or 1)


# ---------------------------------------------------------------------------------------
# the service


class ShadowScorer:
    """Scores the shadow challenger in batches, after the responses have gone out.

    The request path only queues the rows; ``interval_s`` after the first queued row, the
    rows of each shadow model are scored in one onnxruntime call and logged with role
    ``shadow``. The batch runs on the server's event loop, between requests: a request's
    latency never includes the shadow model, and no second thread fights the request path
    for the GIL (a background thread did: it cost a quarter of the throughput).
    """

    def __init__(self, svc: Sidecar, interval_s: float = 0.01):
        self.svc = svc
        self.interval_s = interval_s
        self._queue: list[tuple[LoadedModel, np.ndarray, str, list[Any], Any]] = []
        self._scheduled = False

    def submit(
        self, model: LoadedModel, x: np.ndarray, request_id: str, symbols: list[Any], stamps: Any
    ) -> None:
        self._queue.append((model, x, request_id, symbols, stamps))
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # called outside a server (tests, scripts): score now
                self.drain()
                return
            self._scheduled = True
            loop.call_later(self.interval_s, self._drain_scheduled)

    def _drain_scheduled(self) -> None:
        self._scheduled = False
        try:
            self.drain()
        except Exception:  # a shadow failure must never touch serving
            log.exception("shadow scoring failed")

    def drain(self) -> None:
        queue, self._queue = self._queue, []
        by_model: dict[int, list[tuple[LoadedModel, np.ndarray, str, list[Any], Any]]] = {}
        for item in queue:
            by_model.setdefault(id(item[0]), []).append(item)
        for items in by_model.values():
            model = items[0][0]
            started = time.perf_counter()
            p_all = model.predict(np.concatenate([it[1] for it in items]))
            per_row_ms = (time.perf_counter() - started) * 1000 / max(1, len(p_all))
            offset = 0
            for _, x, request_id, symbols, stamps in items:
                p = p_all[offset : offset + len(x)]
                offset += len(x)
                self.svc.log_rows(
                    request_id,
                    model,
                    "shadow",
                    x,
                    p,
                    symbols,
                    [self.svc.label(float(v)) for v in p],
                    ["shadow"] * len(p),
                    per_row_ms,
                    stamps,
                )
            self.svc.metrics.child(
                self.svc.metrics.predictions, model.signal, model.version, "shadow"
            ).inc(len(p_all))

    def close(self) -> None:
        self.drain()


class Sidecar:
    """Everything a worker process holds: models, features, risk state, log, metrics."""

    def __init__(self, settings: Settings, start_background: bool = True):
        from signalops.serving.metrics import Metrics
        from signalops.serving.predlog import PredictionLogClient
        from signalops.serving.risk import (
            CachedRiskState,
            LocalRiskState,
            RedisRiskState,
            RiskGuard,
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
        self._online: Any = None
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:12]  # unique per process start
        self.shadow = ShadowScorer(self)
        self._feature_cache: dict[tuple[str, str], tuple[float, Any]] = {}
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
        self.metrics.close()
        close = getattr(self.risk.state, "close", None)
        if close is not None:
            close()
        if self._online is not None:
            self._online.close()

    def _log_stats(self, stats: dict[str, Any]) -> None:
        """The writer's figures, about once a second: metrics, the log's health, and an
        alert when rows were refused by the database (dead-lettered)."""
        self.metrics.log_depth.set(stats.get("depth", 0))
        self.metrics.spilled.set(stats.get("spilled", 0))
        with contextlib.suppress(Exception):  # the risk store is down: its dependency says so
            self.metrics.breaker_open.set(1 if self.risk.breaker_now(datetime.now(UTC)) else 0)
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

    # -- features ---------------------------------------------------------------------------

    def online_features(
        self, model: LoadedModel, symbols: list[str]
    ) -> tuple[np.ndarray, list[Any], bool]:
        """The model's features for each symbol, from the online store (through a short
        in-process cache), and whether they are stale: with the store unreachable, the last
        vector read for a symbol is served while it is younger than ``max_feature_age_s``;
        a symbol with none gets a 503 that names the store."""
        from signalops.features.online_store import online_store_from_settings

        now = time.time()
        rows, stamps, missing = [], [], []
        version = model.feature_set_version
        wanted = [s for s in symbols if not self._cached(version, s, now)]
        stale = False
        if wanted:
            if self._online is None:
                self._online = online_store_from_settings(self.settings)
            online = self._online
            try:
                fetched = self.dependencies["online_store"].call(
                    lambda: online.read(version, wanted)
                )
            except DependencyDown:  # what we read before serves, if it is young enough
                if any((version, s) not in self._feature_cache for s in wanted):
                    raise
                stale = True
            else:
                for symbol, vector in fetched.items():
                    self._feature_cache[(version, symbol)] = (now, vector)
        for symbol in symbols:
            entry = self._feature_cache.get((version, symbol))
            if entry is None:
                missing.append(symbol)
                continue
            vector = entry[1]
            age = now - vector.ts.timestamp()
            if age > self.cfg.max_feature_age_s:
                if stale:
                    raise DependencyDown(self.dependencies["online_store"])
                raise ApiError(
                    422,
                    f"online features for {symbol!r} ({version}) are "
                    f"{age:.0f} s old, older than serving.max_feature_age_s "
                    f"{self.cfg.max_feature_age_s:.0f} s",
                    "stale_features",
                )
            try:
                rows.append([vector.values[n] for n in model.feature_names])
            except KeyError as exc:
                raise ApiError(
                    422, f"online features for {symbol!r} lack {exc.args[0]!r}", "bad_features"
                ) from None
            stamps.append(vector.ts)
        if missing:
            raise ApiError(
                404,
                f"unknown symbols {missing}: no online features for feature set {version}",
                "unknown_symbol",
            )
        return np.asarray(rows, dtype=np.float32), stamps, stale

    def _cached(self, version: str, symbol: str, now: float) -> bool:
        entry = self._feature_cache.get((version, symbol))
        return entry is not None and now - entry[0] < self.cfg.feature_cache_ttl_s

    # -- scoring ----------------------------------------------------------------------------

    def models_of(self, signal: str) -> SignalModels:
        models = self.pool.models.get(signal)
        if models is None:
            raise ApiError(
                404, f"unknown signal {signal!r}; served: {self.signals}", "unknown_model"
            )
        if models.champion is None:
            raise ApiError(503, f"no model loaded yet for {signal!r}", "not_ready")
        return models

    def record_trade(self, pnl: float) -> dict[str, float]:
        now = datetime.now(UTC)
        before = self.dependencies["risk_state"].call(lambda: self.risk.breaker_now(now))
        state = self.dependencies["risk_state"].call(lambda: self.risk.trade_result(pnl, now))
        after = self.risk.breaker(state)
        if after and not before:  # this trade tripped it: one alert per breaker and day
            self.metrics.breaker_open.set(1)
            day = self.risk.day(now)
            self._alert(
                "signalops: risk circuit breaker tripped",
                f"{after}. BUY/SELL signals are held for the rest of the trading day "
                f"{day} (or until POST /v1/admin/risk/reset).",
                kind="risk_breaker_tripped",
                key=f"{self.settings.signal_name}:{day}",
                window=timedelta(days=1),
            )
        return {k: float(v) for k, v in state.items()}

    def reset_risk(self) -> None:
        now = datetime.now(UTC)
        before = self.dependencies["risk_state"].call(lambda: self.risk.breaker_now(now))
        self.dependencies["risk_state"].call(lambda: self.risk.reset(now))
        self.metrics.breaker_open.set(0)
        if before:
            from signalops.alerts.ledger import resolve

            # the next trip today is a new episode: alerted again
            self._alerts.submit(
                resolve,
                self.settings,
                kind="risk_breaker_tripped",
                key=f"{self.settings.signal_name}:{self.risk.day(now)}",
            )
            self._alert(
                "signalops: risk circuit breaker reset",
                f"The risk state of {self.risk.day(now)} was reset by an admin "
                f"(was: {before}); BUY/SELL signals flow again.",
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
            raise ApiError(
                404,
                f"{signal} v{version} is not loaded here; loaded versions: {held}",
                "unknown_version",
            )
        return model

    def decide(
        self, p: np.ndarray, apply_risk: bool = True
    ) -> tuple[list[str], list[RiskDecision]]:
        """BUY/SELL/HOLD per row, through the risk guard (a blocked signal becomes HOLD)."""
        labels = [self.label(float(v)) for v in p]
        if not apply_risk:
            return labels, [RiskDecision(True, "ensemble member")] * len(p)
        confidences = [max(float(v), 1 - float(v)) for v in p]
        try:  # the check reads a snapshot: the state's own sync says when Redis is back
            decisions = self.dependencies["risk_state"].call(
                lambda: self.risk.check(labels, confidences, datetime.now(UTC)), mark_up=False
            )
        except DependencyDown:  # fail closed: with the limits unknown, nothing trades
            blocked = RiskDecision(False, "risk state unavailable")
            decisions = [RiskDecision(True, "ok") if s == "HOLD" else blocked for s in labels]
        final = [s if d.allowed else "HOLD" for s, d in zip(labels, decisions, strict=True)]
        return final, decisions

    def label(self, p: float) -> str:
        return self.cfg.label(p)

    def log_rows(
        self,
        request_id: str,
        model: LoadedModel,
        role: str,
        x: np.ndarray,
        p: np.ndarray,
        symbols: list[str | None],
        signals: list[str],
        decisions: list[str],
        latency_ms: float,
        stamps: list[Any] | None,
    ) -> None:
        now = datetime.now(UTC)
        signal_name, version = model.signal, model.version
        # Values in predlog.COLUMNS order.
        self.predlog.submit(
            [
                [
                    request_id,
                    i,
                    signal_name,
                    role,
                    now,
                    symbols[i],
                    version,
                    hashlib.blake2b(x[i].tobytes(), digest_size=8).hexdigest(),
                    stamps[i] if stamps else None,
                    float(p[i]),
                    signals[i],
                    decisions[i],
                    latency_ms,
                ]
                for i in range(len(p))
            ]
        )


# ---------------------------------------------------------------------------------------
# handlers


Handler = Callable[[Request], Awaitable[Response]]


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body of {declared} bytes exceeds {limit} bytes", "too_large")
    chunks, size, more = [], 0, True
    while more:  # the ASGI messages themselves: Request.stream() adds a layer per chunk
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client disconnected while sending the body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body exceeds {limit} bytes", "too_large")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _body(request: Request, limit: int) -> Any:
    content_type = request.headers.get("content-type")
    if not media_type_ok(content_type):
        raise ApiError(
            415,
            f"Content-Type {str(content_type)[:80]!r} is not JSON: send application/json",
            "unsupported_media_type",
        )
    raw = await _read(request, limit)
    if not raw:
        raise ApiError(400, "empty request body: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


def _pinned_version(request: Request) -> str | None:
    """The version a caller pins: ``X-Model-Version`` header (wins) or ``?version=``."""
    header = request.headers.get("x-model-version")
    query = request.query_params.get("version")
    if query is not None:
        query = check_version(query, "parameter 'version'")
    if header is not None:
        return check_version(header, "header X-Model-Version")
    return query


def _header_request_id(request: Request) -> str | None:
    value = request.headers.get("x-request-id")
    return None if value is None else REQUEST_ID.check(value, "header X-Request-Id")


def build_app(settings: Settings, sidecar: Sidecar | None = None) -> Starlette:
    svc = sidecar or Sidecar(settings)
    cfg = settings.serving
    metrics = svc.metrics

    def endpoint(name: str, fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await fn(request)
            except InputError as exc:
                metrics.child(metrics.errors, name, exc.kind).inc()
                headers = {"Retry-After": "1"} if exc.status == 503 else None
                response = _json({"error": exc.kind, "message": exc.message}, exc.status, headers)
            except DependencyDown as exc:  # logged once by the dependency, not per request
                dep = exc.dependency
                metrics.child(metrics.errors, name, f"{dep.name}_down").inc()
                response = _json(
                    {"error": "unavailable", "message": str(exc), "dependency": dep.name},
                    503,
                    {"Retry-After": str(max(1, round(dep.retry_s)))},
                )
            except Exception as exc:
                if is_outage(exc):  # a dependency this route reached without a tracker
                    metrics.child(metrics.errors, name, "dependency_down").inc()
                    log.error("%s: a dependency is unreachable: %s", name, type(exc).__name__)
                    response = _json(
                        {"error": "unavailable", "message": "a dependency is unreachable"},
                        503,
                        {"Retry-After": "1"},
                    )
                else:  # never a crash; a 500 is counted and logged, its detail not answered
                    log.exception("unexpected error in %s", name)
                    metrics.child(metrics.errors, name, "internal").inc()
                    response = _json(
                        {"error": "internal", "message": "internal error (logged)"}, 500
                    )
            metrics.child(metrics.requests, name, str(response.status_code)).inc()
            metrics.child(metrics.latency, name).observe(time.perf_counter() - started)
            return response

        return wrapped

    def admin(fn: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            token = cfg.admin_token
            # RFC 9110: the auth scheme is case-insensitive ("bearer", "BEARER").
            scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
            if (
                not token
                or scheme.lower() != "bearer"
                or not hmac.compare_digest(given.strip().encode(), token.encode())
            ):
                raise ApiError(
                    401, "admin routes need 'Authorization: Bearer <token>'", "unauthorized"
                )
            return await fn(request)

        return guarded

    def serve(
        signal: str,
        provide: Provider,
        symbols: list[str | None],
        key: str,
        request_id: str,
        started: float,
        apply_risk: bool = True,
        pinned: str | None = None,
    ) -> Scored:
        """Route (or take the pinned version), read features for the model, score, guard,
        log (+ shadow)."""
        models = svc.models_of(signal)
        champion = models.champion
        assert champion is not None
        if pinned is not None:
            model = svc.pinned_model(signal, pinned)
            role = "champion" if model is champion else "pinned"
            shadow = None
        else:
            model, role, shadow = route(models, symbols[0] or "", key)
        try:
            x, stamps = provide(model)
        except InputError:
            if model is champion or pinned is not None:
                raise
            # The challenger cannot read this input (another feature set): champion answers.
            failed = metrics.child(metrics.prediction_errors, signal, model.version, role, "input")
            model, role = champion, "champion"
            x, stamps = provide(model)
            failed.inc(len(x))
        if len(x) > cfg.max_batch_rows:
            raise ApiError(413, f"{len(x)} rows exceed serving.max_batch_rows {cfg.max_batch_rows}")
        try:
            p = model.predict(x)
        except Exception:
            failed = metrics.child(
                metrics.prediction_errors, signal, model.version, role, "predict"
            )
            failed.inc(len(x))
            raise
        final, decisions = svc.decide(p, apply_risk)
        latency_ms = (time.perf_counter() - started) * 1000
        svc.log_rows(
            request_id,
            model,
            role,
            x,
            p,
            symbols,
            final,
            [d.as_text() for d in decisions],
            latency_ms,
            stamps,
        )
        metrics.child(metrics.predictions, signal, model.version, role).inc(len(p))
        metrics.child(metrics.model_latency, signal, model.version, role).observe(latency_ms / 1000)
        if shadow is not None and cfg.shadow:
            try:
                same = shadow.feature_names == model.feature_names
                xs, stamps_s = (x, stamps) if same else provide(shadow)
            except InputError as exc:
                metrics.child(metrics.errors, "shadow", exc.kind).inc()
            else:
                # Off the request path: batched with other requests' shadow rows.
                svc.shadow.submit(shadow, xs, request_id, symbols, stamps_s)
        return Scored(model, role, p, final, decisions, stamps)

    def serve_ensemble(
        ensemble: Any,
        provide: Provider,
        symbols: list[str | None],
        key: str,
        request_id: str,
        started: float,
    ) -> tuple[list[dict[str, Any]], np.ndarray, list[str], list[RiskDecision], list[Any] | None]:
        """Weighted average (or weighted up-vote share) of the members' P(up); one risk check."""
        members: list[dict[str, Any]] = []
        weighted: np.ndarray | None = None
        total = 0.0
        stamps: list[Any] | None = None
        for member, weight in ensemble.members.items():
            scored = serve(member, provide, symbols, key, request_id, started, apply_risk=False)
            vote = scored.p if ensemble.method == "average" else (scored.p > 0.5).astype(float)
            weighted = vote * weight if weighted is None else weighted + vote * weight
            total += weight
            stamps = stamps or scored.stamps
            members.append(
                {
                    "name": member,
                    "version": scored.model.version,
                    "role": scored.role,
                    "weight": weight,
                    "probability": [float(v) for v in scored.p],
                }
            )
        assert weighted is not None
        p = weighted / total
        final, decisions = svc.decide(p)
        return members, p, final, decisions, stamps

    async def signals_endpoint(request: Request) -> Response:
        started = time.perf_counter()
        body = await _body(request, cfg.max_body_bytes)
        if not isinstance(body, dict):
            raise ApiError(422, "expected a JSON object")
        # Every field present is checked, used or not: the document and the server agree.
        signal = body.get("signal", svc.signals[0])
        if not isinstance(signal, str):
            raise ApiError(422, "'signal' must be a string")
        if signal not in svc.signals and signal not in svc.ensembles:
            raise ApiError(
                404,
                f"unknown signal {str(signal)[:64]!r}; served: {[*svc.signals, *svc.ensembles]}",
                "unknown_model",
            )
        header_key = request.headers.get("x-request-key")
        if header_key is not None:
            KEY.check(header_key, "header X-Request-Key")
        key = KEY.check(body.get("key", header_key or ""), "'key'")
        request_id = (
            REQUEST_ID.check(body["request_id"], "'request_id'")
            if "request_id" in body
            else svc.next_id()
        )
        symbol = SYMBOL.check(body["symbol"], "'symbol'") if "symbol" in body else None
        listed = body.get("symbols")
        if listed is not None:
            if not isinstance(listed, list) or not listed:
                raise ApiError(422, "'symbols' must be a non-empty list of strings")
            if len(listed) > cfg.max_batch_rows:
                raise ApiError(
                    422,
                    f"'symbols': {len(listed)} exceed serving.max_batch_rows {cfg.max_batch_rows}",
                )
            listed = [SYMBOL.check(v, f"'symbols'[{i}]") for i, v in enumerate(listed)]
        elif "symbols" in body:
            raise ApiError(422, "'symbols' must be a non-empty list of strings")
        ensemble = svc.ensembles.get(signal)
        if ensemble is None:
            svc.models_of(signal)  # no model yet: 503 first
        provide: Provider
        symbols: list[str | None]
        stale: list[bool] = []
        if "features" in body:
            feats = body["features"]
            records = [feats] if isinstance(feats, dict) else feats
            if not isinstance(records, list) or not records:
                raise ApiError(422, "'features' must be an object or a non-empty list of objects")
            if len(records) > cfg.max_batch_rows:
                raise ApiError(
                    422,
                    f"'features': {len(records)} rows exceed serving.max_batch_rows "
                    f"{cfg.max_batch_rows}",
                )
            symbols = [symbol] * len(records)
            # The bar time of inline features (optional): logged, so that the outcomes DAG
            # can label these predictions like those read from the online store.
            inline_stamps = (
                _inline_stamps(body["features_ts"], len(records)) if "features_ts" in body else None
            )

            def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
                return records_matrix(records, model.feature_names, "features"), inline_stamps

        else:
            if "features_ts" in body:  # checked all the same; only inline features use it
                _inline_stamps(body["features_ts"], None)
            if listed is not None:
                wanted = list(listed)
            elif symbol is not None:
                wanted = [symbol]
            else:
                raise ApiError(422, "send 'symbol', 'symbols' or inline 'features'")
            symbols = list(wanted)

            def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
                x, stamps, was_stale = svc.online_features(model, wanted)
                stale.append(was_stale)
                return x, stamps

        if ensemble is not None:
            members, p, final, decisions, stamps = serve_ensemble(
                ensemble, provide, symbols, key, request_id, started
            )
            model_info: dict[str, Any] = {
                "name": signal,
                "ensemble": ensemble.method,
                "members": members,
            }
        else:
            scored = serve(signal, provide, symbols, key, request_id, started)
            p, final, decisions = scored.p, scored.final, scored.decisions
            stamps = scored.stamps
            model_info = {"name": signal, "version": scored.model.version, "role": scored.role}
        latency_ms = (time.perf_counter() - started) * 1000
        return _json(
            {
                "request_id": request_id,
                "model": model_info,
                "predictions": [
                    {
                        "symbol": symbols[i],
                        "probability": float(p[i]),
                        "signal": final[i],
                        "confidence": max(float(p[i]), 1 - float(p[i])),
                        "risk": {"allowed": decisions[i].allowed, "reason": decisions[i].reason},
                        "features_ts": stamps[i].isoformat() if stamps else None,
                        "features_stale": any(stale),
                    }
                    for i in range(len(p))
                ],
                "latency_ms": latency_ms,
            },
        )

    async def invocations(request: Request) -> Response:
        started = time.perf_counter()
        body = await _body(request, cfg.max_body_bytes)
        if not isinstance(body, dict):
            raise ApiError(
                422,
                "expected a JSON object with one of dataframe_split, dataframe_records, "
                "instances, inputs",
            )
        signal = svc.signals[0]
        svc.models_of(signal)
        pinned = _pinned_version(request)
        keys = ("dataframe_split", "dataframe_records", "instances", "inputs")
        formats = [k for k in keys if k in body]
        if len(formats) != 1:
            raise ApiError(
                422,
                "send exactly one of dataframe_split, dataframe_records, instances, inputs "
                f"(got {sorted(body)[:8]})",
            )
        fmt = formats[0]
        data = body[fmt]
        records: list[Any] | None = None
        rows: Any = None
        split_columns: list[str] | None = None
        if fmt == "dataframe_split":
            if not isinstance(data, dict) or "data" not in data:
                raise ApiError(422, "dataframe_split: expected {'columns': [...], 'data': [[...]]}")
            columns, rows = data.get("columns"), data["data"]
            if columns is not None:
                if not isinstance(columns, list) or not isinstance(rows, list) or not rows:
                    raise ApiError(422, "dataframe_split: columns and data must be non-empty lists")
                if not distinct_strings(columns):
                    raise ApiError(422, "dataframe_split: columns must be distinct strings")
                for i, r in enumerate(rows):
                    if not isinstance(r, list) or len(r) != len(columns):
                        raise ApiError(
                            422,
                            f"dataframe_split: row {i} is not a list of {len(columns)} values "
                            "(one per column)",
                        )
                split_columns = columns
        elif fmt == "dataframe_records":
            if not isinstance(data, list):
                raise ApiError(422, "dataframe_records: expected a list of records")
            records = data
        else:
            if isinstance(data, dict) and INPUT_NAME in data:
                data = data[INPUT_NAME]
            if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
                records = data
            else:
                rows = data

        def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
            if records is not None:
                return records_matrix(records, model.feature_names, fmt), None
            if split_columns is not None:  # named columns, any order: reorder in numpy
                order = column_order(split_columns, model.feature_names, fmt)
                x = finite_matrix(rows, len(split_columns), fmt)
                return (x if order == list(range(len(order))) else x[:, order]), None
            return finite_matrix(rows, len(model.feature_names), fmt), None

        count = len(records) if records is not None else len(rows) if isinstance(rows, list) else 0
        if count > cfg.max_batch_rows:
            raise ApiError(
                422, f"{fmt}: {count} rows exceed serving.max_batch_rows {cfg.max_batch_rows}"
            )
        request_id = _header_request_id(request) or svc.next_id()
        key = KEY.check(request.headers.get("x-request-key", ""), "header X-Request-Key")
        scored = serve(
            signal, provide, [None] * max(count, 1), key, request_id, started, pinned=pinned
        )
        return _json({"predictions": scored.p.tolist()})

    def v2_metadata(model: LoadedModel) -> dict[str, Any]:
        return {
            "name": model.signal,
            "versions": [model.version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, len(model.feature_names)]}
            ],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, 2]}],
            "parameters": {
                "feature_names": list(model.feature_names),
                "feature_set_version": model.feature_set_version,
            },
        }

    def v2_target(request: Request) -> tuple[str, LoadedModel, str | None]:
        """(name, the model that answers, the pinned version) of a V2 model path."""
        name = request.path_params["name"]
        models = svc.models_of(name)
        assert models.champion is not None
        version = request.path_params.get("version")
        if version is None:
            return name, models.champion, None
        version = check_version(version, "path version")
        return name, svc.pinned_model(name, version), version

    async def v2_model(request: Request) -> Response:
        return _json(v2_metadata(v2_target(request)[1]))

    async def v2_model_ready(request: Request) -> Response:
        name, model, _ = v2_target(request)
        return _json({"name": name, "ready": True, "version": model.version})

    async def v2_infer(request: Request) -> Response:
        """JSON tensors or the binary data extension (``signalops.serving.v2``)."""
        started = time.perf_counter()
        name, target, pinned = v2_target(request)
        content_type = request.headers.get("content-type")
        binary_body = request.headers.get(v2.HEADER_LENGTH) is not None
        if not binary_body and not media_type_ok(content_type):
            raise ApiError(
                415,
                f"Content-Type {str(content_type)[:80]!r} is not JSON: send application/json",
                "unsupported_media_type",
            )
        if request.headers.get("content-encoding", "identity") != "identity":
            raise ApiError(
                415,
                f"Content-Encoding {request.headers['content-encoding'][:40]!r}: send the "
                "body uncompressed",
                "unsupported_media_type",
            )
        raw = await _read(request, cfg.max_body_bytes)
        if not raw:
            raise ApiError(400, "empty request body: send a JSON object")
        parsed = v2.parse_infer(
            raw,
            request.headers.get(v2.HEADER_LENGTH),
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            width=len(target.feature_names),
            max_rows=cfg.max_batch_rows,
        )
        request_id = REQUEST_ID.check(parsed.id, "'id'") if parsed.id is not None else svc.next_id()
        n_rows = len(parsed.rows)

        def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
            return finite_matrix(parsed.rows, len(model.feature_names), "V2 infer"), None

        scored = serve(
            name,
            provide,
            [None] * n_rows,
            KEY.check(request.headers.get("x-request-key", ""), "header X-Request-Key"),
            request_id,
            started,
            pinned=pinned,
        )
        probs = np.stack([1 - scored.p, scored.p], axis=1)
        header = {
            "model_name": name,
            "model_version": scored.model.version,
            "id": request_id,
            "parameters": {"role": scored.role},
        }
        body, headers = v2.render_infer(header, OUTPUT_NAME, probs, parsed.binary_output)
        media = "application/octet-stream" if headers else "application/json"
        return Response(body, media_type=media, headers=headers)

    async def health(request: Request) -> Response:
        return _json({"status": "live"})

    async def ready(request: Request) -> Response:
        """Ready while a model is loaded (inline features need nothing else); the body says
        each dependency's state, and ``degraded`` while one is down."""
        if not svc.pool.ready:
            raise ApiError(503, "no model loaded yet", "not_ready")
        deps = svc.dependency_states()
        down = [name for name, d in deps.items() if d["state"] == "down"]
        return _json({"status": "degraded" if down else "ready", "dependencies": deps})

    async def ping(request: Request) -> Response:
        """MLflow scoring protocol liveness (``mlflow models serve`` answers /ping)."""
        return Response(b"\n", status_code=200 if svc.pool.ready else 503)

    async def version(request: Request) -> Response:
        from signalops import __version__

        return Response(f"signalops-sidecar {__version__}".encode(), media_type="text/plain")

    async def v2_live(request: Request) -> Response:
        return _json({"live": True})

    async def v2_ready(request: Request) -> Response:
        return _json({"ready": svc.pool.ready}, 200 if svc.pool.ready else 503)

    async def list_models(request: Request) -> Response:
        """Every version this sidecar holds, its role and its inputs (a version that is no
        longer champion or challenger stays loaded a while: callers may pin it)."""
        out = []
        for models in list(svc.pool.models.values()):  # one snapshot per signal
            roles = [
                (role, getattr(models, role))
                for role in (c.ALIAS_CHAMPION, c.ALIAS_CHALLENGER)
                if getattr(models, role) is not None
            ]
            held = {model.version for _, model in roles}
            roles += [("retained", m) for m in models.retained if m.version not in held]
            out += [
                {**model.describe(role), "canary_weight": models.canary_weight}
                for role, model in roles
            ]
        return _json(
            {
                "models": out,
                "last_poll": svc.pool.stats.last_poll,
                "reloads": svc.pool.stats.reloads,
                "reload_failures": svc.pool.stats.reload_failures,
                "downloads": svc.pool.stats.downloads,
                "registry_events": svc.pool.events_connected,
                "last_error": svc.pool.stats.last_error,
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        metrics.log_depth.set(svc.predlog.depth)
        metrics.spilled.set(svc.predlog.spilled)
        metrics.reloads.set(svc.pool.stats.reloads)
        metrics.zero_errors()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def reload(request: Request) -> Response:
        try:
            changes = svc.pool.refresh()
        except Exception as exc:  # the registry's own errors: none of them is the caller's
            svc.dependencies["registry"].failed(exc)
            raise ApiError(503, "the model registry could not be read", "registry_down") from None
        return _json({"changes": changes, "models": list(svc.pool.models)})

    async def trade_result(request: Request) -> Response:
        body = await _body(request, cfg.max_body_bytes)
        if not isinstance(body, dict) or "pnl" not in body:
            raise ApiError(422, "expected {'pnl': <finite number, fraction of equity>}")
        pnl = check_pnl(body["pnl"], cfg.risk.max_trade_pnl)
        return _json({"state": svc.record_trade(pnl)})

    async def risk_reset(request: Request) -> Response:
        svc.reset_risk()
        return _json({"status": "reset"})

    from signalops.serving.openapi import document

    spec_cache: dict[str, Any] = {"key": None, "body": b""}

    async def openapi(request: Request) -> Response:
        """Built from what is loaded (feature names, versions), so it says exactly what
        the server accepts now; rebuilt when a model changes."""
        key = tuple(
            (signal, tuple(sorted(svc.pool.loaded_versions(signal))), models.champion)
            for signal, models in svc.pool.models.items()
        )
        if key != spec_cache["key"]:
            spec_cache["body"] = _json(document(settings, svc.pool)).body
            spec_cache["key"] = key
        return Response(spec_cache["body"], media_type="application/json")

    async def null(request: Request) -> Response:
        """The HTTP stack alone (benchmark baseline): reads the body, answers a constant."""
        if not media_type_ok(request.headers.get("content-type")):
            raise ApiError(415, "send application/json", "unsupported_media_type")
        await _read(request, cfg.max_body_bytes)
        return _json({"predictions": [0.5]})

    routes = [
        *(
            [Route("/null", endpoint("null", null), methods=["POST"])]
            if cfg.bench_null_route
            else []
        ),
        Route("/v1/signals", endpoint("signals", signals_endpoint), methods=["POST"]),
        Route("/invocations", endpoint("invocations", invocations), methods=["POST"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/version", version, methods=["GET"]),
        Route("/v2/health/live", endpoint("v2_live", v2_live), methods=["GET"]),
        Route("/v2/health/ready", endpoint("v2_ready", v2_ready), methods=["GET"]),
        Route("/v2/models/{name}", endpoint("v2_model", v2_model), methods=["GET"]),
        Route(
            "/v2/models/{name}/ready", endpoint("v2_model_ready", v2_model_ready), methods=["GET"]
        ),
        Route("/v2/models/{name}/infer", endpoint("v2_infer", v2_infer), methods=["POST"]),
        Route(
            "/v2/models/{name}/versions/{version}", endpoint("v2_model", v2_model), methods=["GET"]
        ),
        Route(
            "/v2/models/{name}/versions/{version}/ready",
            endpoint("v2_model_ready", v2_model_ready),
            methods=["GET"],
        ),
        Route(
            "/v2/models/{name}/versions/{version}/infer",
            endpoint("v2_infer", v2_infer),
            methods=["POST"],
        ),
        Route("/health", endpoint("health", health), methods=["GET"]),
        Route("/ready", endpoint("ready", ready), methods=["GET"]),
        Route("/v1/models", endpoint("models", list_models), methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/v1/admin/reload", endpoint("admin_reload", admin(reload)), methods=["POST"]),
        Route(
            "/v1/admin/risk/reset",
            endpoint("admin_risk_reset", admin(risk_reset)),
            methods=["POST"],
        ),
        Route(
            "/v1/risk/trade-result", endpoint("trade_result", admin(trade_result)), methods=["POST"]
        ),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        svc.start()
        # Everything loaded so far (MLflow, pandas, the models) lives as long as the process:
        # move it out of the collector's reach, so that full collections stay short.
        gc.collect()
        gc.freeze()
        yield
        svc.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sidecar = svc
    return app
