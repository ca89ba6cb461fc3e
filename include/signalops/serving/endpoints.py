"""The sidecar's route handlers: each reads its protocol's request, scores it through the
Scorer and renders the protocol's answer. Errors are raised (``signalops.serving.errors``)
and turned into answers by the app's error middleware."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from signalops.config import Settings
from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME
from signalops.registry import contracts as c
from signalops.serving import http
from signalops.serving.errors import InvalidInput, MalformedRequest, NotReady, RegistryDown
from signalops.serving.inputs import (
    REQUEST_ID,
    SYMBOL,
    check_pnl,
    check_version,
    finite_matrix,
)
from signalops.serving.pool import LoadedModel
from signalops.serving.protocols import mlflow, native, v2
from signalops.serving.scoring import Blended, Scored
from signalops.serving.sidecar import Sidecar


class Endpoints:
    def __init__(self, settings: Settings, svc: Sidecar):
        self.settings = settings
        self.svc = svc
        self.cfg = settings.serving
        self._spec_key: Any = None
        self._spec = b""

    # -- scoring ----------------------------------------------------------------------------

    async def signals(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await http.json_body(request, self.cfg.max_body_bytes)
        req = native.parse(body, request.headers.get("x-request-key"), self.svc)
        scorer = self.svc.scorer
        result: Scored | Blended
        if req.ensemble is not None:
            result = scorer.blend(
                req.ensemble, req.provide, req.symbols, req.key, req.request_id, started
            )
        else:
            result = scorer.serve(
                req.signal, req.provide, req.symbols, req.key, req.request_id, started
            )
        latency_ms = (time.perf_counter() - started) * 1000
        return http.json_response(native.render(req, result, latency_ms))

    async def invocations(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await http.json_body(request, self.cfg.max_body_bytes)
        req = mlflow.parse(body, self.cfg.max_batch_rows)
        signal = self.svc.signals[0]
        self.svc.models_of(signal)
        pinned = http.pinned_version(request)
        request_id = http.header_request_id(request) or self.svc.next_id()
        scored = self.svc.scorer.serve(
            signal, req.provide, [None] * max(req.rows, 1), http.header_key(request),
            request_id, started, pinned=pinned,
        )  # fmt: skip
        return http.json_response(mlflow.render(scored.p))

    async def v2_infer(self, request: Request) -> Response:
        """JSON tensors or the binary data extension (``protocols.v2``)."""
        started = time.perf_counter()
        name, target, pinned = self._v2_target(request)
        headers = request.headers
        v2.check_headers(
            headers.get("content-type"),
            headers.get(v2.HEADER_LENGTH),
            headers.get("content-encoding", "identity"),
        )
        raw = await http.read_body(request, self.cfg.max_body_bytes)
        if not raw:
            raise MalformedRequest("empty request body: send a JSON object")
        parsed = v2.parse_infer(
            raw,
            headers.get(v2.HEADER_LENGTH),
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            width=len(target.feature_names),
            max_rows=self.cfg.max_batch_rows,
        )
        request_id = (
            REQUEST_ID.check(parsed.id, "'id'") if parsed.id is not None else self.svc.next_id()
        )

        def provide(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
            return finite_matrix(parsed.rows, len(model.feature_names), "V2 infer"), None

        scored = self.svc.scorer.serve(
            name, provide, [None] * len(parsed.rows), http.header_key(request), request_id,
            started, pinned=pinned,
        )  # fmt: skip
        probs = np.stack([1 - scored.p, scored.p], axis=1)
        header = {
            "model_name": name,
            "model_version": scored.model.version,
            "id": request_id,
            "parameters": {"role": scored.role},
        }
        body, extra = v2.render_infer(header, OUTPUT_NAME, probs, parsed.binary_output)
        media = "application/octet-stream" if extra else http.JSON
        return Response(body, media_type=media, headers=extra)

    def _v2_target(self, request: Request) -> tuple[str, LoadedModel, str | None]:
        """(name, the model that answers, the pinned version) of a V2 model path."""
        name = request.path_params["name"]
        models = self.svc.models_of(name)
        assert models.champion is not None
        version = request.path_params.get("version")
        if version is None:
            return name, models.champion, None
        version = check_version(version, "path version")
        return name, self.svc.pinned_model(name, version), version

    async def v2_model(self, request: Request) -> Response:
        return http.json_response(v2.metadata(self._v2_target(request)[1], INPUT_NAME, OUTPUT_NAME))

    async def v2_model_ready(self, request: Request) -> Response:
        name, model, _ = self._v2_target(request)
        return http.json_response({"name": name, "ready": True, "version": model.version})

    # -- health and state -------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return http.json_response({"status": "live"})

    async def ready(self, request: Request) -> Response:
        """Ready while a model is loaded (inline features need nothing else); the body says
        each dependency's state, and ``degraded`` while one is down."""
        if not self.svc.pool.ready:
            raise NotReady("no model loaded yet")
        deps = self.svc.dependency_states()
        down = [name for name, d in deps.items() if d["state"] == "down"]
        return http.json_response({"status": "degraded" if down else "ready", "dependencies": deps})

    async def ping(self, request: Request) -> Response:
        """MLflow scoring protocol liveness (``mlflow models serve`` answers /ping)."""
        return Response(b"\n", status_code=200 if self.svc.pool.ready else 503)

    async def version(self, request: Request) -> Response:
        from signalops import __version__

        return Response(f"signalops-sidecar {__version__}".encode(), media_type="text/plain")

    async def v2_live(self, request: Request) -> Response:
        return http.json_response({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        ready = self.svc.pool.ready
        return http.json_response({"ready": ready}, 200 if ready else 503)

    async def models(self, request: Request) -> Response:
        """Every version this sidecar holds, its role and its inputs (a version that is no
        longer champion or challenger stays loaded a while: callers may pin it)."""
        pool = self.svc.pool
        out = []
        for models in list(pool.models.values()):  # one snapshot per signal
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
        stats = pool.stats
        return http.json_response(
            {
                "models": out,
                "last_poll": stats.last_poll,
                "reloads": stats.reloads,
                "reload_failures": stats.reload_failures,
                "downloads": stats.downloads,
                "registry_events": pool.events_connected,
                "last_error": stats.last_error,
            }
        )

    async def metrics(self, request: Request) -> Response:
        svc, metrics = self.svc, self.svc.metrics
        metrics.log_depth.set(svc.predlog.depth)
        metrics.spilled.set(svc.predlog.spilled)
        metrics.reloads.set(svc.pool.stats.reloads)
        metrics.zero_errors()
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    async def openapi(self, request: Request) -> Response:
        """Built from what is loaded (feature names, versions), so it says exactly what
        the server accepts now; rebuilt when a model changes."""
        from signalops.serving.openapi import document

        pool = self.svc.pool
        key = tuple(
            (signal, tuple(sorted(pool.loaded_versions(signal))), models.champion)
            for signal, models in pool.models.items()
        )
        if key != self._spec_key:
            self._spec = bytes(http.json_response(document(self.settings, pool)).body)
            self._spec_key = key
        return Response(self._spec, media_type=http.JSON)

    # -- admin ------------------------------------------------------------------------------

    async def reload(self, request: Request) -> Response:
        try:
            changes = self.svc.pool.refresh()
        except Exception as exc:  # the registry's own errors: none of them is the caller's
            self.svc.dependencies["registry"].failed(exc)
            raise RegistryDown("the model registry could not be read") from None
        return http.json_response({"changes": changes, "models": list(self.svc.pool.models)})

    async def trade_result(self, request: Request) -> Response:
        body = await http.json_body(request, self.cfg.max_body_bytes)
        if not isinstance(body, dict) or "pnl" not in body:
            raise InvalidInput("expected {'pnl': <finite number, fraction of equity>}")
        pnl = check_pnl(body["pnl"], self.cfg.risk.max_trade_pnl)
        symbol = SYMBOL.check(body["symbol"], "'symbol'") if "symbol" in body else None
        return http.json_response({"state": self.svc.record_trade(pnl, symbol)})

    async def risk_summary(self, request: Request) -> Response:
        return http.json_response(self.svc.risk_summary())

    async def risk_reset(self, request: Request) -> Response:
        self.svc.reset_risk()
        return http.json_response({"status": "reset"})

    async def null(self, request: Request) -> Response:
        """The HTTP stack alone (benchmark baseline): reads the body, answers a constant."""
        http.require_json(request.headers.get("content-type"))
        await http.read_body(request, self.cfg.max_body_bytes)
        return http.json_response({"predictions": [0.5]})
