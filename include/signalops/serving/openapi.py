"""The sidecar's OpenAPI 3.1 document (served at ``/openapi.json``).

Built from what the sidecar holds right now: the feature names of each served model, the
versions a caller may pin, the served names. So every schema is exact: a body valid under
the document is accepted (bar unknown symbols, 404) and a body it rejects is refused with
a 4xx; schemathesis checks both ways in the test suite. Two rules cannot be said in JSON
Schema and are written in the descriptions: a list of ``features_ts`` holds one time per
feature row, and V2 ``data`` holds rows x columns values.
"""

from __future__ import annotations

from typing import Any

from signalops.config import Settings
from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME
from signalops.serving.inputs import (
    KEY,
    NUMBER,
    REQUEST_ID,
    SYMBOL,
    TIME,
    VERSION,
    record_schema,
    row_schema,
)

ERROR_REF = {"$ref": "#/components/schemas/Error"}
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "dependency": {"type": "string", "description": "the service that is down (503)"},
    },
}
RETRY_AFTER = {
    "Retry-After": {
        "required": True,
        "description": "seconds before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}
JSON = "application/json"


def _body(schema: dict[str, Any], description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"required": True, "content": {JSON: {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def _responses(ok: dict[str, Any], *errors: int, media: str = JSON) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {media: {"schema": ok}}}}
    for code in errors:
        response: dict[str, Any] = {
            "description": "error",
            "content": {JSON: {"schema": ERROR_REF}},
        }
        if code == 503:
            response["headers"] = RETRY_AFTER
        out[str(code)] = response
    return out


def _header(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }


def _list(items: dict[str, Any], max_items: int) -> dict[str, Any]:
    return {"type": "array", "items": items, "minItems": 1, "maxItems": max_items}


def document(settings: Settings, pool: Any) -> dict[str, Any]:
    cfg = settings.serving
    max_rows = cfg.max_batch_rows
    served = list(pool.models)
    ensembles = {e.name: e for e in cfg.ensembles}
    default = served[0] if served else settings.signal_name

    def names_of(signal: str) -> tuple[str, ...] | None:
        models = pool.models.get(signal)
        champion = getattr(models, "champion", None)
        return tuple(champion.feature_names) if champion is not None else None

    # Which feature names a request for each served name must carry (ensembles: a member's).
    needs: dict[str, tuple[str, ...] | None] = {s: names_of(s) for s in served}
    for name, ensemble in ensembles.items():
        needs[name] = names_of(next(iter(ensemble.members)))
    groups: dict[tuple[str, ...] | None, list[str]] = {}
    for name, names in needs.items():
        groups.setdefault(names, []).append(name)

    def features(names: tuple[str, ...] | None) -> dict[str, Any]:
        record = record_schema(names) if names else {"type": "object"}
        return {"anyOf": [record, _list(record, max_rows)]}

    branches = []
    for names, members in groups.items():
        branch: dict[str, Any] = {
            "properties": {"signal": {"enum": members}, "features": features(names)}
        }
        if default not in members:
            branch["required"] = ["signal"]
        branches.append(branch)
    signals_body = {
        "type": "object",
        "properties": {
            "signal": {"enum": list(needs), "description": f"served name (default {default})"},
            "symbol": SYMBOL.schema(),
            "symbols": _list(SYMBOL.schema(), max_rows),
            "features": {"type": ["object", "array"]},
            "features_ts": {
                "anyOf": [TIME, {"type": "array", "items": TIME, "minItems": 1}],
                "description": "bar time of inline features: one for every row, or a list "
                "with one per feature row (labels them for the outcomes DAG)",
            },
            "key": KEY.schema(description="caller key for sticky canary routing"),
            "request_id": REQUEST_ID.schema(),
        },
        "anyOf": [{"required": ["features"]}, {"required": ["symbols"]}, {"required": ["symbol"]}],
        "allOf": [{"anyOf": branches}],
    }
    prediction = {
        "type": "object",
        "required": ["symbol", "probability", "signal", "risk", "features_ts", "features_stale"],
        "properties": {
            "symbol": {"type": ["string", "null"]},
            "probability": {"type": "number"},
            "signal": {"enum": ["BUY", "SELL", "HOLD"]},
            "confidence": {"type": "number"},
            "risk": {"type": "object"},
            "features_ts": {"type": ["string", "null"]},
            "features_stale": {
                "type": "boolean",
                "description": "the online store was unreachable: the last features read "
                "(younger than serving.max_feature_age_s) were used",
            },
        },
    }
    key_header = _header("X-Request-Key", KEY.schema(), "caller key for sticky canary routing")
    id_header = _header("X-Request-Id", REQUEST_ID.schema(), "request id to log")

    champion_names = needs.get(default)
    width = len(champion_names) if champion_names else 1
    record = record_schema(champion_names) if champion_names else {"type": "object"}
    rows = _list(row_schema(width), max_rows)
    records = _list(record, max_rows)
    tensor_or_records = {
        "anyOf": [
            rows,
            records,
            {
                "type": "object",
                "required": [INPUT_NAME],
                "properties": {INPUT_NAME: {"anyOf": [rows, records]}},
            },
        ]
    }
    split_columns: dict[str, Any] = {
        "anyOf": [
            {
                "type": "array",
                "items": {"enum": list(cols)},
                "minItems": width,
                "maxItems": width,
                "uniqueItems": True,
            }
            for cols in ([*champion_names], [f"f{i}" for i in range(width)])
        ]
        if champion_names
        else [{"type": "array"}]
    }
    formats = {
        "dataframe_split": {
            "type": "object",
            "required": ["data"],
            "properties": {"columns": split_columns, "data": rows},
        },
        "dataframe_records": records,
        "instances": tensor_or_records,
        "inputs": tensor_or_records,
    }
    invocations_body = {
        "type": "object",
        "properties": formats,
        "oneOf": [{"required": [k]} for k in formats],
        "description": "exactly one of the MLflow scoring formats",
    }
    version_params = [
        _header("X-Model-Version", VERSION, "pin a loaded version (see /v1/models)"),
        {
            "name": "version",
            "in": "query",
            "required": False,
            "schema": VERSION,
            "description": "pin a loaded version (X-Model-Version wins when both are sent)",
        },
    ]
    bad = (400, 404, 415, 422, 503)
    paths: dict[str, Any] = {
        "/v1/signals": {
            "post": {
                "summary": "Signals by symbol (online features) or for inline features",
                "parameters": [key_header],
                "requestBody": _body(signals_body),
                "responses": _responses(
                    {
                        "type": "object",
                        "required": ["request_id", "model", "predictions"],
                        "properties": {
                            "request_id": {"type": "string"},
                            "model": {"type": "object"},
                            "predictions": {"type": "array", "items": prediction},
                            "latency_ms": {"type": "number"},
                        },
                    },
                    *bad,
                    413,
                ),
            }
        },
        "/invocations": {
            "post": {
                "summary": "MLflow scoring protocol (as `mlflow models serve`)",
                "parameters": [*version_params, id_header, key_header],
                "requestBody": _body(invocations_body),
                "responses": _responses(
                    {
                        "type": "object",
                        "required": ["predictions"],
                        "properties": {"predictions": {"type": "array", "items": NUMBER}},
                    },
                    *bad,
                    413,
                ),
            }
        },
        "/v2/health/live": {"get": {"responses": _responses({"type": "object"})}},
        "/v2/health/ready": {"get": {"responses": _responses({"type": "object"}, 503)}},
    }
    for signal in served:
        names = needs[signal]
        prefixes = {f"/v2/models/{signal}": names}
        for version, model in pool.loaded_versions(signal).items():
            prefixes[f"/v2/models/{signal}/versions/{version}"] = tuple(model.feature_names)
        for prefix, feature_names in prefixes.items():
            n = len(feature_names) if feature_names else 1
            paths[prefix] = {"get": {"responses": _responses({"type": "object"}, 404, 503)}}
            paths[f"{prefix}/ready"] = {
                "get": {"responses": _responses({"type": "object"}, 404, 503)}
            }
            paths[f"{prefix}/infer"] = {"post": _v2_infer(n, max_rows, key_header, bad)}
    paths.update(
        {
            "/health": {"get": {"responses": _responses({"type": "object"})}},
            "/ready": {
                "get": {
                    "summary": "ready while a model is loaded; each dependency's state",
                    "responses": _responses({"type": "object"}, 503),
                }
            },
            "/ping": {
                "get": {
                    "summary": "MLflow scoring protocol liveness",
                    "responses": {
                        "200": {"description": "a model is loaded"},
                        "503": {"description": "no model yet"},
                    },
                }
            },
            "/version": {"get": {"responses": _responses({"type": "string"}, media="text/plain")}},
            "/v1/models": {"get": {"responses": _responses({"type": "object"})}},
            "/metrics": {
                "get": {
                    "responses": _responses(
                        {"type": "string"}, media="text/plain; version=0.0.4; charset=utf-8"
                    )
                }
            },
            "/openapi.json": {"get": {"responses": _responses({"type": "object"})}},
            "/v1/admin/reload": {
                "post": {
                    "security": [{"bearer": []}],
                    "responses": _responses({"type": "object"}, 401, 503),
                }
            },
            "/v1/admin/risk/reset": {
                "post": {
                    "security": [{"bearer": []}],
                    "responses": _responses({"type": "object"}, 401, 503),
                }
            },
            "/v1/risk/summary": {
                "get": {
                    "summary": "The risk guard's state: trades, realized P&L, drawdown, "
                    "losing streak, exposure and breakers, per symbol and in total",
                    "responses": _responses({"type": "object"}, 503),
                }
            },
            "/v1/risk/trade-result": {
                "post": {
                    "summary": "Feed a closed trade's result to the risk guard's breakers",
                    "security": [{"bearer": []}],
                    "requestBody": _body(
                        {
                            "type": "object",
                            "required": ["pnl"],
                            "properties": {
                                "pnl": {
                                    "type": "number",
                                    "minimum": -cfg.risk.max_trade_pnl,
                                    "maximum": cfg.risk.max_trade_pnl,
                                    "description": "the trade's result, fraction of equity",
                                },
                                "symbol": SYMBOL.schema(
                                    description="the symbol traded: its own breaker and "
                                    "P&L, and its position closes"
                                ),
                            },
                        }
                    ),
                    "responses": _responses({"type": "object"}, 400, 401, 413, 415, 422, 503),
                }
            },
        }
    )
    if cfg.bench_null_route:
        paths["/null"] = {
            "post": {
                "summary": "The HTTP stack alone (benchmark baseline): any JSON, a constant",
                "requestBody": {"required": False, "content": {JSON: {"schema": {}}}},
                "responses": _responses({"type": "object"}, 400, 413, 415),
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "signalops sidecar",
            "version": "2",
            "description": "Serves the registry's champion (and canary challenger) as ONNX. "
            "This document is built from the models loaded now.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _v2_infer(
    width: int, max_rows: int, key_header: dict[str, Any], bad: tuple[int, ...]
) -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "shape", "datatype", "data"],
        "properties": {
            "name": {"const": INPUT_NAME},
            "shape": {
                "type": "array",
                "prefixItems": [
                    {"type": "integer", "minimum": 1, "maximum": max_rows},
                    {"type": "integer", "const": width},
                ],
                "minItems": 2,
                "maxItems": 2,
            },
            "datatype": {"enum": ["FP32", "FP64", "INT64", "INT32"]},
            "data": {
                "anyOf": [
                    {"type": "array", "items": NUMBER, "minItems": 1},
                    {"type": "array", "items": row_schema(width), "minItems": 1},
                ],
                "description": "rows x columns values (shape), flat or as rows",
            },
            "parameters": {
                "type": "object",
                "not": {"required": ["binary_data_size"]},
                "description": "binary_data_size: the tensor's bytes follow the JSON header "
                "(the binary data extension, with the Inference-Header-Content-Length header)",
            },
        },
    }
    output = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"const": OUTPUT_NAME},
            "parameters": {
                "type": "object",
                "description": "binary_data: true answers this output as raw bytes",
            },
        },
    }
    return {
        "summary": "Open Inference Protocol (KServe V2) inference",
        "parameters": [key_header],
        "requestBody": _body(
            {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": REQUEST_ID.schema(),
                    "inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1},
                    "outputs": {"type": "array", "items": output},
                    "parameters": {
                        "type": "object",
                        "description": "binary_data_output: true answers every output as raw "
                        "bytes after the JSON (Inference-Header-Content-Length says where)",
                    },
                },
            }
        ),
        "responses": _responses({"type": "object"}, *bad, 413),
    }
