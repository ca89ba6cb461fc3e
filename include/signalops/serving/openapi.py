"""The sidecar's OpenAPI 3.1 document (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from signalops.config import Settings

NUMBER_ROW = {"type": "array", "items": {"type": "number"}, "minItems": 1}
FEATURE_RECORD = {"type": "object", "additionalProperties": {"type": "number"}, "minProperties": 1}
ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "OK", "content": {"application/json": {"schema": ok}}}
    }
    for code in errors:
        out[str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def document(settings: Settings) -> dict[str, Any]:
    signals = list(settings.serving.signals or (settings.signal_name,))
    bad = (400, 404, 413, 422, 503)
    prediction = {
        "type": "object",
        "properties": {
            "symbol": {"type": ["string", "null"]},
            "probability": {"type": "number"},
            "signal": {"enum": ["BUY", "SELL", "HOLD"]},
            "confidence": {"type": "number"},
            "risk": {"type": "object"},
            "features_ts": {"type": ["string", "null"]},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "signalops sidecar",
            "version": "1",
            "description": "Serves the registry's champion (and canary challenger) as ONNX.",
        },
        "paths": {
            "/v1/signals": {
                "post": {
                    "summary": "Signals by symbol (online features) or for inline features",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "properties": {
                                "signal": {"enum": signals},
                                "symbol": {"type": "string"},
                                "symbols": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                    "minItems": 1,
                                },
                                "features": {
                                    "oneOf": [
                                        FEATURE_RECORD,
                                        {"type": "array", "items": FEATURE_RECORD},
                                    ]
                                },
                                "features_ts": {
                                    "oneOf": [
                                        {"type": "string", "format": "date-time"},
                                        {
                                            "type": "array",
                                            "items": {"type": "string", "format": "date-time"},
                                        },
                                    ],
                                    "description": "bar time of inline features, one or one "
                                    "per row (labels them for the outcomes DAG)",
                                },
                                "key": {
                                    "type": "string",
                                    "description": "caller key for sticky routing",
                                },
                                "request_id": {"type": "string"},
                            },
                        }
                    ),
                    "responses": _responses(
                        {
                            "type": "object",
                            "properties": {
                                "request_id": {"type": "string"},
                                "model": {"type": "object"},
                                "predictions": {"type": "array", "items": prediction},
                                "latency_ms": {"type": "number"},
                            },
                        },
                        *bad,
                    ),
                }
            },
            "/invocations": {
                "post": {
                    "summary": "MLflow scoring protocol (as `mlflow models serve`)",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "properties": {
                                "dataframe_split": {
                                    "type": "object",
                                    "properties": {
                                        "columns": {"type": "array", "items": {"type": "string"}},
                                        "data": {"type": "array", "items": NUMBER_ROW},
                                    },
                                    "required": ["data"],
                                },
                                "dataframe_records": {"type": "array", "items": FEATURE_RECORD},
                                "instances": {"type": "array", "items": NUMBER_ROW},
                                "inputs": {"type": "array", "items": NUMBER_ROW},
                            },
                        }
                    ),
                    "responses": _responses(
                        {"type": "object", "properties": {"predictions": {"type": "array"}}}, *bad
                    ),
                }
            },
            "/v2/health/live": {"get": {"responses": _responses({"type": "object"})}},
            "/v2/health/ready": {"get": {"responses": _responses({"type": "object"}, 503)}},
            "/v2/models/{name}": {
                "get": {
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": _responses({"type": "object"}, 404, 503),
                }
            },
            "/v2/models/{name}/infer": {
                "post": {
                    "summary": "Open Inference Protocol (KServe V2) inference",
                    "parameters": [
                        {
                            "name": "name",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["inputs"],
                            "properties": {
                                "id": {"type": "string"},
                                "inputs": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["name", "shape", "datatype", "data"],
                                        "properties": {
                                            "name": {"type": "string"},
                                            "shape": {
                                                "type": "array",
                                                "items": {"type": "integer"},
                                            },
                                            "datatype": {"type": "string"},
                                            "data": {"type": "array"},
                                        },
                                    },
                                },
                            },
                        }
                    ),
                    "responses": _responses({"type": "object"}, *bad),
                }
            },
            "/health": {"get": {"responses": _responses({"type": "object"})}},
            "/ready": {"get": {"responses": _responses({"type": "object"}, 503)}},
            "/v1/models": {"get": {"responses": _responses({"type": "object"})}},
            "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text format"}}}},
            "/v1/admin/reload": {
                "post": {
                    "security": [{"bearer": []}],
                    "responses": _responses({"type": "object"}, 401),
                }
            },
            "/v1/admin/risk/reset": {
                "post": {
                    "security": [{"bearer": []}],
                    "responses": _responses({"type": "object"}, 401),
                }
            },
            "/v1/risk/trade-result": {
                "post": {
                    "security": [{"bearer": []}],
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["pnl"],
                            "properties": {"pnl": {"type": "number"}},
                        }
                    ),
                    "responses": _responses({"type": "object"}, 400, 401, 413, 422),
                }
            },
        },
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
