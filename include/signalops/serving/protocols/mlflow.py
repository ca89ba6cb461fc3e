"""``POST /invocations``: the MLflow scoring protocol (what ``mlflow models serve`` and
MLflow's ``ScoringServerClient`` speak): ``dataframe_split``, ``dataframe_records``,
``instances`` or ``inputs``; answers ``{"predictions": [P(up), ...]}``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from signalops.onnx_model import INPUT_NAME
from signalops.serving.errors import InvalidInput
from signalops.serving.inputs import column_order, distinct_strings, finite_matrix, records_matrix

if TYPE_CHECKING:
    from signalops.serving.pool import LoadedModel

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


@dataclass
class InvocationsRequest:
    fmt: str
    rows: int
    records: list[Any] | None = None  # dataframe_records, or instances/inputs as objects
    matrix: Any = None  # rows of values
    columns: list[str] | None = None  # dataframe_split's named columns, any order

    def provide(self, model: LoadedModel) -> tuple[np.ndarray, list[Any] | None]:
        if self.records is not None:
            return records_matrix(self.records, model.feature_names, self.fmt), None
        if self.columns is not None:  # named columns, any order: reorder in numpy
            order = column_order(self.columns, model.feature_names, self.fmt)
            x = finite_matrix(self.matrix, len(self.columns), self.fmt)
            return (x if order == list(range(len(order))) else x[:, order]), None
        return finite_matrix(self.matrix, len(model.feature_names), self.fmt), None


def parse(body: Any, max_rows: int) -> InvocationsRequest:
    if not isinstance(body, dict):
        raise InvalidInput(
            "expected a JSON object with one of dataframe_split, dataframe_records, "
            "instances, inputs"
        )
    formats = [k for k in FORMATS if k in body]
    if len(formats) != 1:
        raise InvalidInput(
            "send exactly one of dataframe_split, dataframe_records, instances, inputs "
            f"(got {sorted(body)[:8]})"
        )
    fmt = formats[0]
    data = body[fmt]
    if fmt == "dataframe_split":
        req = _split(data)
    elif fmt == "dataframe_records":
        if not isinstance(data, list):
            raise InvalidInput("dataframe_records: expected a list of records")
        req = InvocationsRequest(fmt, len(data), records=data)
    else:
        if isinstance(data, dict) and INPUT_NAME in data:
            data = data[INPUT_NAME]
        if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            req = InvocationsRequest(fmt, len(data), records=data)
        else:
            req = InvocationsRequest(fmt, len(data) if isinstance(data, list) else 0, matrix=data)
    if req.rows > max_rows:
        raise InvalidInput(f"{fmt}: {req.rows} rows exceed serving.max_batch_rows {max_rows}")
    return req


def _split(data: Any) -> InvocationsRequest:
    fmt = "dataframe_split"
    if not isinstance(data, dict) or "data" not in data:
        raise InvalidInput("dataframe_split: expected {'columns': [...], 'data': [[...]]}")
    columns, rows = data.get("columns"), data["data"]
    count = len(rows) if isinstance(rows, list) else 0
    if columns is None:
        return InvocationsRequest(fmt, count, matrix=rows)
    if not isinstance(columns, list) or not isinstance(rows, list) or not rows:
        raise InvalidInput("dataframe_split: columns and data must be non-empty lists")
    if not distinct_strings(columns):
        raise InvalidInput("dataframe_split: columns must be distinct strings")
    for i, r in enumerate(rows):
        if not isinstance(r, list) or len(r) != len(columns):
            raise InvalidInput(
                f"dataframe_split: row {i} is not a list of {len(columns)} values (one per column)"
            )
    return InvocationsRequest(fmt, count, matrix=rows, columns=columns)


def render(p: np.ndarray) -> dict[str, Any]:
    return {"predictions": p.tolist()}
