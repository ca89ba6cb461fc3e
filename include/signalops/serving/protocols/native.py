"""``POST /v1/signals``: the native protocol (by symbol, or inline features; ensembles)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from signalops.serving.errors import InvalidInput, UnknownModel
from signalops.serving.inputs import KEY, REQUEST_ID, SYMBOL, check_time, records_matrix
from signalops.serving.scoring import Blended, Provider, Scored

if TYPE_CHECKING:
    from signalops.config import EnsembleSettings
    from signalops.serving.pool import LoadedModel
    from signalops.serving.sidecar import Sidecar


@dataclass
class SignalsRequest:
    signal: str
    ensemble: EnsembleSettings | None
    key: str
    request_id: str
    symbols: list[str | None]
    provide: Provider
    stale: list[bool] = field(default_factory=list)  # per online read: served from cache


def parse(body: Any, header_key: str | None, svc: Sidecar) -> SignalsRequest:
    """Every field present is checked, used or not: the document and the server agree."""
    cfg = svc.cfg
    if not isinstance(body, dict):
        raise InvalidInput("expected a JSON object")
    signal = body.get("signal", svc.signals[0])
    if not isinstance(signal, str):
        raise InvalidInput("'signal' must be a string")
    if signal not in svc.signals and signal not in svc.ensembles:
        raise UnknownModel(
            f"unknown signal {str(signal)[:64]!r}; served: {[*svc.signals, *svc.ensembles]}"
        )
    if header_key is not None:
        KEY.check(header_key, "header X-Request-Key")
    key = KEY.check(body.get("key", header_key or ""), "'key'")
    request_id = (
        REQUEST_ID.check(body["request_id"], "'request_id'")
        if "request_id" in body
        else svc.next_id()
    )
    symbol = SYMBOL.check(body["symbol"], "'symbol'") if "symbol" in body else None
    listed = _symbols(body, cfg.max_batch_rows)
    ensemble = svc.ensembles.get(signal)
    if ensemble is None:
        svc.models_of(signal)  # no model yet: 503 first
    if "features" in body:
        records = _records(body["features"], cfg.max_batch_rows)
        # The bar time of inline features (optional): logged, so that the outcomes DAG
        # can label these predictions like those read from the online store.
        stamps = _stamps(body["features_ts"], len(records)) if "features_ts" in body else None

        def inline(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
            return records_matrix(records, model.feature_names, "features"), stamps

        return SignalsRequest(signal, ensemble, key, request_id, [symbol] * len(records), inline)
    if "features_ts" in body:  # checked all the same; only inline features use it
        _stamps(body["features_ts"], None)
    if listed is not None:
        wanted = list(listed)
    elif symbol is not None:
        wanted = [symbol]
    else:
        raise InvalidInput("send 'symbol', 'symbols' or inline 'features'")
    stale: list[bool] = []

    def online(model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
        x, stamps, was_stale = svc.online.read(model, wanted)
        stale.append(was_stale)
        return x, stamps

    return SignalsRequest(signal, ensemble, key, request_id, list(wanted), online, stale)


def render(req: SignalsRequest, result: Scored | Blended, latency_ms: float) -> dict[str, Any]:
    model: dict[str, Any]
    if isinstance(result, Blended):
        assert req.ensemble is not None
        model = {"name": req.signal, "ensemble": req.ensemble.method, "members": result.members}
    else:
        model = {"name": req.signal, "version": result.model.version, "role": result.role}
    p, stamps, stale = result.p, result.stamps, any(req.stale)
    return {
        "request_id": req.request_id,
        "model": model,
        "predictions": [
            {
                "symbol": req.symbols[i],
                "probability": float(p[i]),
                "signal": result.final[i],
                "confidence": max(float(p[i]), 1 - float(p[i])),
                "risk": {
                    "allowed": result.decisions[i].allowed,
                    "reason": result.decisions[i].reason,
                    "position_size": result.decisions[i].size,
                },
                "features_ts": stamps[i].isoformat() if stamps else None,
                "features_stale": stale,
            }
            for i in range(len(p))
        ],
        "latency_ms": latency_ms,
    }


def _symbols(body: dict[str, Any], max_rows: int) -> list[str] | None:
    listed = body.get("symbols")
    if listed is None:
        if "symbols" in body:
            raise InvalidInput("'symbols' must be a non-empty list of strings")
        return None
    if not isinstance(listed, list) or not listed:
        raise InvalidInput("'symbols' must be a non-empty list of strings")
    if len(listed) > max_rows:
        raise InvalidInput(f"'symbols': {len(listed)} exceed serving.max_batch_rows {max_rows}")
    return [SYMBOL.check(v, f"'symbols'[{i}]") for i, v in enumerate(listed)]


def _records(feats: Any, max_rows: int) -> list[Any]:
    records = [feats] if isinstance(feats, dict) else feats
    if not isinstance(records, list) or not records:
        raise InvalidInput("'features' must be an object or a non-empty list of objects")
    if len(records) > max_rows:
        raise InvalidInput(
            f"'features': {len(records)} rows exceed serving.max_batch_rows {max_rows}"
        )
    return records


def _stamps(value: Any, rows: int | None) -> list[datetime]:
    """``features_ts`` of inline features: one RFC 3339 time for every row, or one per row
    (``rows`` None: only check the times)."""
    if isinstance(value, list):
        if not value:
            raise InvalidInput("'features_ts' must be a time or a non-empty list of times")
        stamps = [check_time(v, f"'features_ts'[{i}]") for i, v in enumerate(value)]
        if rows is not None and len(stamps) != rows:
            raise InvalidInput(f"'features_ts' has {len(stamps)} times for {rows} feature rows")
        return stamps
    return [check_time(value, "'features_ts'")] * (rows or 1)
