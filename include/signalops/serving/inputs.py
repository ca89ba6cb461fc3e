"""What the sidecar accepts, checked at the edge, and the JSON Schema that says so.

Each rule is written once, as a pair: the check the server runs and the schema fragment
that ``/openapi.json`` publishes. So the document cannot promise what the server refuses or
leave out what it refuses: a string the prediction log cannot store (too long for its
column, or with a NUL that PostgreSQL rejects), a bar time outside 1970-2099, a number that
float32 cannot hold or a trade result the risk state should never see is a 422 that names
the field, before anything is scored or logged.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from signalops.onnx_model import onnx_feature_names

FLOAT32_MAX = float(np.finfo(np.float32).max)
NUMBER = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}

# No C0 control characters and no DEL: a NUL cannot be stored by PostgreSQL, and the others
# have no business in a symbol, key or id (they corrupt logs and CSV exports).
TEXT_PATTERN = "^[^\\x00-\\x1F\\x7F]*$"
_CONTROL = re.compile("[\\x00-\\x1F\\x7F]")

# RFC 3339 date-time with an offset, years 1970-2099, and only dates that exist: the pattern
# is exact, so a generator that follows the document never produces a time the server
# refuses (February 30th included).
_YEAR = "(?:19[7-9][0-9]|20[0-9][0-9])"
_LEAP = "(?:19(?:7[26]|8[048]|9[26])|20(?:[02468][048]|[13579][26]))"
_DAY_MONTH = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
TIME_PATTERN = (
    f"^(?:{_YEAR}-{_DAY_MONTH}|{_LEAP}-02-29)"
    "T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,6})?"
    "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
_TIME = re.compile(TIME_PATTERN)
TIME = {
    "type": "string",
    "pattern": TIME_PATTERN,
    "description": "RFC 3339 date-time with an offset (Z or +hh:mm), 1970-2099",
}


class InputError(ValueError):
    """Bad input: the HTTP layer answers ``status`` with this message."""

    def __init__(self, message: str, status: int = 422, kind: str = "bad_request"):
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


@dataclass(frozen=True)
class Text:
    """A string field: length bounds and no control characters."""

    max_len: int
    min_len: int = 1

    def schema(self, **extra: Any) -> dict[str, Any]:
        return {
            "type": "string",
            "minLength": self.min_len,
            "maxLength": self.max_len,
            "pattern": TEXT_PATTERN,
            **extra,
        }

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise InputError(f"{where} must be a string")
        if not self.min_len <= len(value) <= self.max_len:
            raise InputError(
                f"{where} must be {self.min_len} to {self.max_len} characters, got {len(value)}"
            )
        found = _CONTROL.search(value)
        if found:
            raise InputError(
                f"{where} contains a control character (U+{ord(found.group()):04X}) "
                f"at position {found.start()}"
            )
        return value


SYMBOL = Text(64)  # predictions.symbol is VARCHAR(64)
REQUEST_ID = Text(64)  # predictions.request_id is VARCHAR(64)
KEY = Text(256, min_len=0)  # the sticky-routing key: hashed, never stored
VERSION = {"type": "string", "pattern": "^[1-9][0-9]{0,8}$"}


def check_time(value: Any, where: str) -> datetime:
    if not isinstance(value, str) or not _TIME.fullmatch(value):  # ECMA `$`: no "\n" after
        raise InputError(
            f"{where} must be an RFC 3339 date-time with an offset between 1970 and 2099 "
            f"(e.g. 2026-11-27T15:00:00Z), got {str(value)[:40]!r}"
        )
    return datetime.fromisoformat(value).astimezone(UTC)


def check_version(value: Any, where: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(VERSION["pattern"][1:-1], value):
        raise InputError(f"{where} must be a registered version number, got {str(value)[:20]!r}")
    return value


def check_pnl(value: Any, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError("'pnl' must be a finite number (the trade's result, fraction of equity)")
    if abs(value) > limit:
        raise InputError(
            f"'pnl' {value!r} is outside [-{limit}, {limit}] (serving.risk.max_trade_pnl): "
            "a trade result is a fraction of equity"
        )
    return float(value)


def media_type_ok(content_type: str | None) -> bool:
    """JSON (``application/json``, ``application/*+json``) or no Content-Type at all (the
    V2 protocol's stock clients send none); anything else is a 415."""
    if content_type is None:
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


# ---------------------------------------------------------------------------------------
# feature matrices


def finite_matrix(rows: Any, width: int, where: str) -> np.ndarray:
    """A float32 [n, width] matrix from nested lists (or a numeric array: binary tensors),
    or an InputError saying what is wrong."""
    x: np.ndarray | None
    if isinstance(rows, np.ndarray):
        x = rows.astype(np.float64, copy=False)
        if x.ndim != 2 or x.shape[1] != width or not len(x):
            raise InputError(f"{where}: expected [rows, {width}] values, got {list(x.shape)}")
    else:
        if not isinstance(rows, list) or not rows:
            raise InputError(f"{where}: expected a non-empty list of rows")
        # numpy parses well-formed rows in C; the row-by-row walk runs only to name what is
        # wrong (or when bools slipped in: numpy would read them as 0/1).
        try:
            x = np.array(rows, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            x = None
        if x is None or x.ndim != 2 or x.shape[1] != width or _has_bool(rows):
            _explain_rows(rows, width, where)
            raise InputError(f"{where}: a value overflows float32")  # an int beyond float64
    assert x is not None
    # Checked in float64, against the bound the document publishes: a value a hair above
    # float32's largest would round down to it, and pass a check made after the cast. The
    # common case in two reductions (a NaN makes both comparisons false); the cell by name
    # only when something is wrong.
    if x.min() >= -FLOAT32_MAX and x.max() <= FLOAT32_MAX:
        return x.astype(np.float32)
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(x) <= FLOAT32_MAX)  # NaN compares false: caught too
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        if math.isfinite(x[i, j]):
            raise InputError(f"{where}: row {i}, column {j}: {x[i, j]} overflows float32")
        raise InputError(f"{where}: row {i}, column {j} is not finite ({x[i, j]})")
    return x.astype(np.float32)


def _has_bool(rows: list[Any]) -> bool:
    return any(isinstance(row, list) and (True in row or False in row) for row in rows) and any(
        type(v) is bool for row in rows if isinstance(row, list) for v in row
    )


def _explain_rows(rows: list[Any], width: int, where: str) -> None:
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(f"{where}: row {i} is not a list")
        if len(row) != width:
            raise InputError(f"{where}: row {i} has {len(row)} values, the model takes {width}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{where}: row {i}, column {j}: {v!r} is not a number")


def records_matrix(records: Any, names: tuple[str, ...], where: str) -> np.ndarray:
    if not isinstance(records, list) or not records:
        raise InputError(f"{where}: expected a non-empty list of records")
    rows = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise InputError(f"{where}: record {i} is not an object")
        values = list(rec.values())
        rows.append([values[k] for k in column_order(list(rec), names, f"{where}: record {i}")])
    return finite_matrix(rows, len(names), where)


def column_order(columns: list[str], names: tuple[str, ...], where: str) -> list[int]:
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
    raise InputError(
        f"{where}: feature names do not match the model: missing {missing[:10]}, "
        f"unknown {unknown[:10]} (expects {len(names)} features)",
    )


def distinct_strings(columns: list[Any]) -> bool:
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


def record_schema(names: tuple[str, ...]) -> dict[str, Any]:
    """One feature record: every feature by name, or every positional name f0..fN."""

    def exact(keys: tuple[str, ...]) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {k: NUMBER for k in keys},
            "required": list(keys),
            "additionalProperties": False,
        }

    return {"anyOf": [exact(names), exact(tuple(onnx_feature_names(len(names))))]}


def row_schema(width: int) -> dict[str, Any]:
    return {"type": "array", "items": NUMBER, "minItems": width, "maxItems": width}
