"""The sidecar's HTTP API (ASGI, Starlette routes on uvicorn): the route table, the error
middleware, the admin guard and the lifespan.

Native ``POST /v1/signals``; the MLflow scoring protocol on ``POST /invocations``; the Open
Inference Protocol (KServe V2) under ``/v2``; ``/health``, ``/ready``, ``/v1/models``,
``/metrics`` (Prometheus); admin routes behind a bearer token. The OpenAPI document is at
``/openapi.json``. Bad input always gets a 4xx whose message says what is wrong.

Layout (as MLServer's): ``protocols/`` parse and render each protocol, ``scoring`` scores,
``sidecar`` holds the process's state, ``endpoints`` joins them per route.
"""

from __future__ import annotations

import gc
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from signalops.config import Settings
from signalops.serving.endpoints import Endpoints
from signalops.serving.errors import Unauthorized
from signalops.serving.health import DependencyDown, is_outage
from signalops.serving.http import json_response
from signalops.serving.inputs import InputError
from signalops.serving.metrics import Metrics
from signalops.serving.sidecar import Sidecar

__all__ = ["Sidecar", "build_app"]

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def error_answer(name: str, exc: Exception, metrics: Metrics) -> Response:
    """Every failure as an answer, counted per route and kind: never a crash, and a 500's
    detail is logged, not answered."""
    if isinstance(exc, InputError):
        metrics.child(metrics.errors, name, exc.kind).inc()
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return json_response({"error": exc.kind, "message": exc.message}, exc.status, headers)
    if isinstance(exc, DependencyDown):  # logged once by the dependency, not per request
        dep = exc.dependency
        metrics.child(metrics.errors, name, f"{dep.name}_down").inc()
        return json_response(
            {"error": "unavailable", "message": str(exc), "dependency": dep.name},
            503,
            {"Retry-After": str(max(1, round(dep.retry_s)))},
        )
    if is_outage(exc):  # a dependency this route reached without a tracker
        metrics.child(metrics.errors, name, "dependency_down").inc()
        log.error("%s: a dependency is unreachable: %s", name, type(exc).__name__)
        return json_response(
            {"error": "unavailable", "message": "a dependency is unreachable"},
            503,
            {"Retry-After": "1"},
        )
    log.error("unexpected error in %s", name, exc_info=exc)
    metrics.child(metrics.errors, name, "internal").inc()
    return json_response({"error": "internal", "message": "internal error (logged)"}, 500)


def build_app(settings: Settings, sidecar: Sidecar | None = None) -> Starlette:
    svc = sidecar or Sidecar(settings)
    cfg = settings.serving
    metrics = svc.metrics
    ep = Endpoints(settings, svc)

    def counted(name: str, fn: Handler) -> Handler:
        """Requests and latency per route and status; errors answered by kind."""

        async def wrapped(request: Request) -> Response:
            started = time.perf_counter()
            try:
                response = await fn(request)
            except Exception as exc:
                response = error_answer(name, exc, metrics)
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
                raise Unauthorized("admin routes need 'Authorization: Bearer <token>'")
            return await fn(request)

        return guarded

    def post(path: str, name: str, fn: Handler) -> Route:
        return Route(path, counted(name, fn), methods=["POST"])

    def get(path: str, name: str | None, fn: Handler) -> Route:
        return Route(path, fn if name is None else counted(name, fn), methods=["GET"])

    v2 = "/v2/models/{name}"
    routes = [
        *([post("/null", "null", ep.null)] if cfg.bench_null_route else []),
        post("/v1/signals", "signals", ep.signals),
        post("/invocations", "invocations", ep.invocations),
        get("/ping", None, ep.ping),
        get("/version", None, ep.version),
        get("/v2/health/live", "v2_live", ep.v2_live),
        get("/v2/health/ready", "v2_ready", ep.v2_ready),
        get(v2, "v2_model", ep.v2_model),
        get(f"{v2}/ready", "v2_model_ready", ep.v2_model_ready),
        post(f"{v2}/infer", "v2_infer", ep.v2_infer),
        get(f"{v2}/versions/{{version}}", "v2_model", ep.v2_model),
        get(f"{v2}/versions/{{version}}/ready", "v2_model_ready", ep.v2_model_ready),
        post(f"{v2}/versions/{{version}}/infer", "v2_infer", ep.v2_infer),
        get("/health", "health", ep.health),
        get("/ready", "ready", ep.ready),
        get("/v1/models", "models", ep.models),
        get("/metrics", None, ep.metrics),
        get("/openapi.json", None, ep.openapi),
        post("/v1/admin/reload", "admin_reload", admin(ep.reload)),
        post("/v1/admin/risk/reset", "admin_risk_reset", admin(ep.risk_reset)),
        get("/v1/risk/summary", "risk_summary", ep.risk_summary),
        post("/v1/risk/trade-result", "trade_result", admin(ep.trade_result)),
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
