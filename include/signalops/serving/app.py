"""The sidecar's HTTP API (ASGI, Starlette routes on uvicorn).

Native ``POST /v1/signals``; the MLflow scoring protocol on ``POST /invocations``; the Open
Inference Protocol (KServe V2) under ``/v2``; ``/health``, ``/ready``, ``/v1/models``,
``/metrics`` (Prometheus); admin routes behind a bearer token. The OpenAPI document is at
``/openapi.json``. Bad input always gets a 4xx whose message says what is wrong.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import hashlib
import hmac
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from signalops.config import Settings
from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME, onnx_feature_names
from signalops.registry import contracts as c
from signalops.serving.pool import LoadedModel, ModelPool, SignalModels
from signalops.serving.risk import RiskDecision
from signalops.serving.routing import route

log = logging.getLogger(__name__)


@dataclass
class Scored:
    model: LoadedModel
    role: str
    p: np.ndarray
    final: list[str]
    decisions: list[RiskDecision]
    stamps: list[Any] | None


Provider = Callable[[LoadedModel], tuple[np.ndarray, list[Any] | None]]


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "bad_request"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
    )


# ---------------------------------------------------------------------------------------
# input parsing


def _finite_matrix(rows: Any, width: int, where: str) -> np.ndarray:
    """A float32 [n, width] matrix from nested lists, or an ApiError saying what is wrong."""
    if not isinstance(rows, list) or not rows:
        raise ApiError(422, f"{where}: expected a non-empty list of rows")
    # numpy parses well-formed rows in C; the row-by-row walk runs only to name what is
    # wrong (or when bools slipped in: numpy would read them as 0/1).
    try:
        x = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        x = None
    if x is None or x.ndim != 2 or x.shape[1] != width or _has_bool(rows):
        _explain_rows(rows, width, where)
        raise ApiError(422, f"{where}: a value overflows float32")  # an int beyond float64
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)  # out-of-range values become inf here
    if not np.isfinite(x32).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(x32))[0])
        if math.isfinite(x[i, j]):
            raise ApiError(422, f"{where}: row {i}, column {j}: {x[i, j]} overflows float32")
        raise ApiError(422, f"{where}: row {i}, column {j} is not finite ({x[i, j]})")
    return x32


def _has_bool(rows: list[Any]) -> bool:
    return any(True in row or False in row for row in rows) and any(
        type(v) is bool for row in rows for v in row
    )


def _explain_rows(rows: list[Any], width: int, where: str) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise ApiError(422, f"{where}: row {i} is not a list")
        if len(row) != width:
            raise ApiError(422, f"{where}: row {i} has {len(row)} values, the model takes {width}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ApiError(422, f"{where}: row {i}, column {j}: {v!r} is not a number")


def _records_matrix(records: Any, names: tuple[str, ...], where: str) -> np.ndarray:
    if not isinstance(records, list) or not records:
        raise ApiError(422, f"{where}: expected a non-empty list of records")
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise ApiError(422, f"{where}: record {i} is not an object")
        values = list(rec.values())
        rows.append([values[k] for k in _column_order(list(rec), names, f"{where}: record {i}")])
    return _finite_matrix(rows, len(names), where)


def _inline_stamps(value: Any, rows: int) -> list[datetime] | None:
    """``features_ts`` of inline features: one ISO-8601 time for every row, or one per row."""
    if value is None:
        return None
    values = value if isinstance(value, list) else [value] * rows
    if len(values) != rows:
        raise ApiError(422, f"'features_ts' has {len(values)} times for {rows} feature rows")
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ApiError(422, f"'features_ts'[{i}] must be an ISO-8601 timestamp string")
        try:
            when = datetime.fromisoformat(v)
        except ValueError:
            raise ApiError(422, f"'features_ts'[{i}]: {v!r} is not ISO-8601") from None
        out.append(when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC))
    return out


def _column_order(columns: list[str], names: tuple[str, ...], where: str) -> list[int]:
    """Positions in ``columns`` of the model's features, by name or as the MLflow model's
    positional names f0..fN."""
    try:
        order = _positions(tuple(columns), names)
    except TypeError:  # an unhashable column name
        order = None
    if order is not None:
        return order
    index = {str(col): i for i, col in enumerate(columns)}
    missing = [n for n in names if n not in index]
    unknown = sorted(set(index) - set(names))
    raise ApiError(
        422,
        f"{where}: feature names do not match the model: missing {missing[:10]}, "
        f"unknown {unknown[:10]} (expects {len(names)} features)",
    )


def _distinct_strings(columns: list[Any]) -> bool:
    try:
        return _distinct_string_tuple(tuple(columns))
    except TypeError:  # an unhashable column name
        return False


@functools.lru_cache(maxsize=512)
def _distinct_string_tuple(columns: tuple[Any, ...]) -> bool:
    return all(isinstance(col, str) for col in columns) and len(set(columns)) == len(columns)


@functools.lru_cache(maxsize=512)
def _positions(columns: tuple[str, ...], names: tuple[str, ...]) -> list[int] | None:
    """Cached: clients send the same header on every request."""
    index = {col: i for i, col in enumerate(columns)}
    for wanted in (names, onnx_feature_names(len(names))):
        if len(columns) == len(wanted) and all(n in index for n in wanted):
            return [index[n] for n in wanted]
    return None


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
        self.pool = ModelPool(settings, self.signals, on_alert=self._alert)
        self.predlog = PredictionLogClient(
            settings.warehouse_url,
            settings.state_dir / "serving" / "spill",
            self.cfg.log_batch_size,
            self.cfg.log_flush_interval_s,
            on_stats=self._log_stats,
        )
        redis_url = settings.online_store.redis_url
        state: RiskState = (
            CachedRiskState(RedisRiskState(redis_url, settings.online_store.key_prefix))
            if redis_url
            else LocalRiskState()
        )
        self.risk = RiskGuard(self.cfg.risk, state)
        self._online: Any = None
        self._ids = itertools.count()
        self._id_prefix = uuid.uuid4().hex[:12]  # unique per process start
        self.shadow = ShadowScorer(self)
        self._feature_cache: dict[tuple[str, str], tuple[float, Any]] = {}
        self.start_background = start_background

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
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
        self.shadow.close()
        self.predlog.close()
        self.metrics.close()
        close = getattr(self.risk.state, "close", None)
        if close is not None:
            close()
        if self._online is not None:
            self._online.close()

    def _log_stats(self, stats: dict[str, Any]) -> None:
        self.metrics.log_depth.set(stats.get("depth", 0))
        self.metrics.spilled.set(stats.get("spilled", 0))
        self.metrics.reloads.set(self.pool.stats.reloads)

    def _alert(self, title: str, text: str) -> None:
        from signalops.alerts import Alert, AlertError, send_alert

        try:
            send_alert(Alert(title=title, text=text, severity="error"), self.settings.alerts)
        except AlertError as exc:
            log.error("could not send alert: %s", exc)

    # -- features ---------------------------------------------------------------------------

    def online_features(
        self, model: LoadedModel, symbols: list[str]
    ) -> tuple[np.ndarray, list[Any]]:
        from signalops.features.online_store import online_store_from_settings

        now = time.time()
        rows, stamps, missing = [], [], []
        wanted = [s for s in symbols if not self._cached(model.feature_set_version, s, now)]
        if wanted:
            if self._online is None:
                self._online = online_store_from_settings(self.settings)
            fetched = self._online.read(model.feature_set_version, wanted)
            for symbol, vector in fetched.items():
                self._feature_cache[(model.feature_set_version, symbol)] = (now, vector)
        for symbol in symbols:
            entry = self._feature_cache.get((model.feature_set_version, symbol))
            if entry is None:
                missing.append(symbol)
                continue
            vector = entry[1]
            age = now - vector.ts.timestamp()
            if age > self.cfg.max_feature_age_s:
                raise ApiError(
                    422,
                    f"online features for {symbol!r} ({model.feature_set_version}) are "
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
                f"unknown symbols {missing}: no online features for feature set "
                f"{model.feature_set_version}",
                "unknown_symbol",
            )
        return np.asarray(rows, dtype=np.float32), stamps

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

    def decide(
        self, p: np.ndarray, apply_risk: bool = True
    ) -> tuple[list[str], list[RiskDecision]]:
        """BUY/SELL/HOLD per row, through the risk guard (a blocked signal becomes HOLD)."""
        labels = [self.label(float(v)) for v in p]
        if not apply_risk:
            return labels, [RiskDecision(True, "ensemble member")] * len(p)
        confidences = [max(float(v), 1 - float(v)) for v in p]
        decisions = self.risk.check(labels, confidences, datetime.now(UTC))
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
    raw = await _read(request, limit)
    if not raw:
        raise ApiError(400, "empty request body: send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON: {exc}") from None


def build_app(settings: Settings, sidecar: Sidecar | None = None) -> Starlette:
    svc = sidecar or Sidecar(settings)
    cfg = settings.serving
    metrics = svc.metrics

    def endpoint(name: str, fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await fn(request)
            except ApiError as exc:
                metrics.child(metrics.errors, name, exc.kind).inc()
                response = _json({"error": exc.kind, "message": exc.message}, exc.status)
            except Exception as exc:  # never a crash; a 500 is counted and logged
                log.exception("unexpected error in %s", name)
                metrics.child(metrics.errors, name, "internal").inc()
                response = _json({"error": "internal", "message": str(exc)[:300]}, 500)
            metrics.child(metrics.requests, name, str(response.status_code)).inc()
            metrics.child(metrics.latency, name).observe(time.perf_counter() - started)
            return response

        return wrapped

    def admin(fn: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            token = cfg.admin_token
            given = request.headers.get("authorization", "")
            if not token or not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
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
    ) -> Scored:
        """Route, read features for the routed model, score, guard, log (+ shadow)."""
        models = svc.models_of(signal)
        champion = models.champion
        assert champion is not None
        model, role, shadow = route(models, symbols[0] or "", key)
        try:
            x, stamps = provide(model)
        except ApiError:
            if model is champion:
                raise
            # The challenger cannot read this input (another feature set): champion answers.
            model, role = champion, "champion"
            x, stamps = provide(model)
        if len(x) > cfg.max_batch_rows:
            raise ApiError(413, f"{len(x)} rows exceed serving.max_batch_rows {cfg.max_batch_rows}")
        p = model.predict(x)
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
            except ApiError as exc:
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
        signal = body.get("signal", svc.signals[0])
        if not isinstance(signal, str):
            raise ApiError(422, "'signal' must be a string")
        key = body.get("key", request.headers.get("x-request-key", ""))
        if not isinstance(key, str):
            raise ApiError(422, "'key' must be a string")
        request_id = body.get("request_id") or svc.next_id()
        if not isinstance(request_id, str) or len(request_id) > 64:
            raise ApiError(422, "'request_id' must be a string of at most 64 characters")
        ensemble = svc.ensembles.get(signal)
        if ensemble is None:
            svc.models_of(signal)  # unknown signal or no model yet: 404 / 503 first
        provide: Provider
        symbols: list[str | None]
        if "features" in body:
            feats = body["features"]
            records = [feats] if isinstance(feats, dict) else feats
            if not isinstance(records, list) or not records:
                raise ApiError(422, "'features' must be an object or a non-empty list of objects")
            if len(records) > cfg.max_batch_rows:
                raise ApiError(413, f"{len(records)} rows exceed {cfg.max_batch_rows}")
            symbol = body.get("symbol")
            if symbol is not None and not isinstance(symbol, str):
                raise ApiError(422, "'symbol' must be a string")
            symbols = [symbol] * len(records)
            # The bar time of inline features (optional): logged, so that the outcomes DAG
            # can label these predictions like those read from the online store.
            inline_stamps = _inline_stamps(body.get("features_ts"), len(records))

            def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
                return _records_matrix(records, model.feature_names, "features"), inline_stamps

        else:
            if "symbols" in body:
                raw = body["symbols"]
                if not isinstance(raw, list) or not raw or not all(isinstance(s, str) for s in raw):
                    raise ApiError(422, "'symbols' must be a non-empty list of strings")
                wanted = list(raw)
            elif isinstance(body.get("symbol"), str):
                wanted = [body["symbol"]]
            else:
                raise ApiError(422, "send 'symbol', 'symbols' or inline 'features'")
            if len(wanted) > cfg.max_batch_rows:
                raise ApiError(413, f"{len(wanted)} symbols exceed {cfg.max_batch_rows}")
            symbols = list(wanted)

            def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
                return svc.online_features(model, wanted)

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
                    }
                    for i in range(len(p))
                ],
                "latency_ms": latency_ms,
            }
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
                if not _distinct_strings(columns):
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
                return _records_matrix(records, model.feature_names, fmt), None
            if split_columns is not None:  # named columns, any order: reorder in numpy
                order = _column_order(split_columns, model.feature_names, fmt)
                x = _finite_matrix(rows, len(split_columns), fmt)
                return (x if order == list(range(len(order))) else x[:, order]), None
            return _finite_matrix(rows, len(model.feature_names), fmt), None

        count = len(records) if records is not None else len(rows) if isinstance(rows, list) else 0
        request_id = (request.headers.get("x-request-id") or svc.next_id())[:64]
        key = request.headers.get("x-request-key", "")
        scored = serve(signal, provide, [None] * max(count, 1), key, request_id, started)
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
            "parameters": {"feature_names": list(model.feature_names)},
        }

    async def v2_model(request: Request) -> Response:
        models = svc.models_of(request.path_params["name"])
        assert models.champion is not None
        return _json(v2_metadata(models.champion))

    async def v2_model_ready(request: Request) -> Response:
        models = svc.models_of(request.path_params["name"])
        assert models.champion is not None
        return _json({"name": models.champion.signal, "ready": True})

    async def v2_infer(request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["name"]
        models = svc.models_of(name)
        assert models.champion is not None
        width = len(models.champion.feature_names)
        body = await _body(request, cfg.max_body_bytes)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("inputs"), list)
            or not body["inputs"]
        ):
            raise ApiError(
                422, "V2 infer: expected {'inputs': [{'name', 'shape', 'datatype', 'data'}]}"
            )
        tensor = body["inputs"][0]
        if not isinstance(tensor, dict):
            raise ApiError(422, "V2 infer: inputs[0] must be an object")
        shape, data = tensor.get("shape"), tensor.get("data")
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        ):
            raise ApiError(422, f"V2 infer: shape must be [rows, {width}], got {shape!r}")
        if shape[1] != width or shape[0] < 1:
            raise ApiError(422, f"V2 infer: shape {shape} does not match [rows >= 1, {width}]")
        if tensor.get("datatype", "FP32") not in ("FP32", "FP64"):
            raise ApiError(422, f"V2 infer: datatype {tensor.get('datatype')!r}; use FP32")
        if not isinstance(data, list):
            raise ApiError(422, "V2 infer: data must be a list")
        flat = data if not data or not isinstance(data[0], list) else [v for r in data for v in r]
        if len(flat) != shape[0] * shape[1]:
            raise ApiError(422, f"V2 infer: {len(flat)} values for shape {shape}")
        matrix = [flat[i * width : (i + 1) * width] for i in range(shape[0])]

        def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
            return _finite_matrix(matrix, len(model.feature_names), "V2 infer"), None

        request_id = str(body.get("id") or svc.next_id())[:64]
        scored = serve(
            name,
            provide,
            [None] * shape[0],
            request.headers.get("x-request-key", ""),
            request_id,
            started,
        )
        model, role, p = scored.model, scored.role, scored.p
        probs = np.stack([1 - p, p], axis=1).astype(np.float32)
        return _json(
            {
                "model_name": name,
                "model_version": model.version,
                "id": request_id,
                "parameters": {"role": role},
                "outputs": [
                    {
                        "name": OUTPUT_NAME,
                        "datatype": "FP32",
                        "shape": list(probs.shape),
                        "data": probs.ravel().tolist(),
                    }
                ],
            }
        )

    async def health(request: Request) -> Response:
        return _json({"status": "live"})

    async def ready(request: Request) -> Response:
        if not svc.pool.ready:
            raise ApiError(503, "no model loaded yet", "not_ready")
        return _json({"status": "ready"})

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
        out = []
        for models in svc.pool.models.values():
            for role in (c.ALIAS_CHAMPION, c.ALIAS_CHALLENGER):
                model = getattr(models, role)
                if model is not None:
                    out.append({**model.describe(role), "canary_weight": models.canary_weight})
        return _json(
            {
                "models": out,
                "last_poll": svc.pool.stats.last_poll,
                "reloads": svc.pool.stats.reloads,
                "reload_failures": svc.pool.stats.reload_failures,
                "last_error": svc.pool.stats.last_error,
            }
        )

    async def metrics_endpoint(request: Request) -> Response:
        metrics.log_depth.set(svc.predlog.depth)
        metrics.spilled.set(svc.predlog.spilled)
        metrics.reloads.set(svc.pool.stats.reloads)
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def reload(request: Request) -> Response:
        changes = svc.pool.refresh()
        return _json({"changes": changes, "models": list(svc.pool.models)})

    async def trade_result(request: Request) -> Response:
        body = await _body(request, cfg.max_body_bytes)
        pnl = body.get("pnl") if isinstance(body, dict) else None
        if isinstance(pnl, bool) or not isinstance(pnl, (int, float)) or not math.isfinite(pnl):
            raise ApiError(422, "expected {'pnl': <finite number, fraction of equity>}")
        return _json({"state": svc.risk.trade_result(float(pnl), datetime.now(UTC))})

    async def risk_reset(request: Request) -> Response:
        svc.risk.reset(datetime.now(UTC))
        return _json({"status": "reset"})

    from signalops.serving.openapi import document

    openapi_body = _json(document(settings)).body

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type="application/json")

    async def null(request: Request) -> Response:
        """The HTTP stack alone (benchmark baseline): reads the body, answers a constant."""
        await _read(request, cfg.max_body_bytes)
        return _json({"predictions": [0.5]})

    routes = [
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
        Route("/null", endpoint("null", null), methods=["POST"]),
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
