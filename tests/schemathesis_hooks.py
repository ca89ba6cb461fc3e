"""Schemathesis hooks for the sidecar's contract test (``SCHEMATHESIS_HOOKS``).

JSON Schema cannot say two things the sidecar's document states in words: a list of
``features_ts`` holds one time per feature row, and V2 ``data`` holds rows x columns
values. For cases generated as *valid*, these hooks make those two counts agree (and
point some requests at symbols that have online features, so that scoring by symbol is
exercised, not only its 404). Cases generated as invalid are left alone.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

SYMBOLS = [s for s in os.environ.get("SIGNALOPS_TEST_SYMBOLS", "").split(",") if s]


def _resize(values: list[Any], n: int) -> list[Any]:
    return [values[i % len(values)] for i in range(n)] if values else values


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    body = case.body
    if case.operation.path.endswith("/infer"):
        for tensor in body.get("inputs", []):
            rows, width = (int(d) for d in tensor["shape"])  # 2.0 is an integer too
            data = tensor["data"]
            if data and isinstance(data[0], list):
                tensor["data"] = _resize(data, rows)
            else:
                tensor["data"] = _resize(data, rows * width)
    elif case.operation.path == "/v1/signals":
        stamps, features = body.get("features_ts"), body.get("features")
        if isinstance(stamps, list) and features is not None:
            rows = len(features) if isinstance(features, list) else 1
            body["features_ts"] = _resize(stamps, rows)
        if SYMBOLS and isinstance(body.get("symbol"), str) and len(body["symbol"]) % 2:
            body["symbol"] = SYMBOLS[len(body["symbol"]) % len(SYMBOLS)]
        if SYMBOLS and isinstance(body.get("symbols"), list) and len(body["symbols"]) % 2:
            body["symbols"] = _resize(SYMBOLS, len(body["symbols"]))
    return case
