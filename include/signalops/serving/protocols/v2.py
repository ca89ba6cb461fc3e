"""The Open Inference Protocol (KServe V2) infer call as stock clients speak it: JSON tensors
and the **binary data extension**.

``tritonclient.http`` (the reference client) sends each input tensor as raw little-endian
bytes after the JSON header by default: the header ``Inference-Header-Content-Length`` says
how many bytes of the body are JSON, each binary input carries
``parameters.binary_data_size`` instead of ``data``, and the bytes follow in input order.
It also asks for binary outputs (``parameters.binary_data_output`` on the request, or
``parameters.binary_data`` on a requested output); the answer then carries the output's
bytes after its JSON header the same way. Spec:
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md

Supported tensor types: FP32, FP64, INT64, INT32 (JSON and binary); one input, ``features``
``[rows, width]``; one output, ``probabilities`` ``[rows, 2]`` FP32. Compressed bodies
(``Content-Encoding``) are refused with 415: the sidecar reads at most
``serving.max_body_bytes`` and will not inflate past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from signalops.serving.errors import UnsupportedMediaType
from signalops.serving.inputs import InputError, media_type_ok

if TYPE_CHECKING:
    from signalops.serving.pool import LoadedModel

HEADER_LENGTH = "inference-header-content-length"
DTYPES = {"FP32": "<f4", "FP64": "<f8", "INT64": "<i8", "INT32": "<i4"}
WHERE = "V2 infer"


@dataclass(frozen=True)
class InferRequest:
    id: Any  # the caller's id (checked by the app), None when absent
    rows: np.ndarray | list[list[Any]]  # binary: a float64 matrix; JSON: nested lists to check
    binary_output: bool


def metadata(model: LoadedModel, input_name: str, output_name: str) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: the model's tensors and feature names."""
    return {
        "name": model.signal,
        "versions": [model.version],
        "platform": "onnxruntime_onnx",
        "inputs": [
            {"name": input_name, "datatype": "FP32", "shape": [-1, len(model.feature_names)]}
        ],
        "outputs": [{"name": output_name, "datatype": "FP32", "shape": [-1, 2]}],
        "parameters": {
            "feature_names": list(model.feature_names),
            "feature_set_version": model.feature_set_version,
        },
    }


def check_headers(content_type: str | None, header_length: str | None, encoding: str) -> None:
    """JSON, or JSON + binary tensors (the header length says so); never compressed."""
    if header_length is None and not media_type_ok(content_type):
        raise UnsupportedMediaType(
            f"Content-Type {str(content_type)[:80]!r} is not JSON: send application/json"
        )
    if encoding != "identity":
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding[:40]!r}: send the body uncompressed"
        )


def parse_infer(
    raw: bytes,
    header_length: str | None,
    *,
    input_name: str,
    output_name: str,
    width: int,
    max_rows: int,
) -> InferRequest:
    """One infer request body (JSON, or JSON + binary tensors) as rows of ``width`` values,
    or an InputError that says what is wrong and where."""
    json_part, binary = _split(raw, header_length)
    try:
        body = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{WHERE}: malformed JSON header: {exc}", 400) from None
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise InputError(
            f"{WHERE}: expected {{'inputs': [{{'name', 'shape', 'datatype', 'data'}}]}}"
        )
    if len(body["inputs"]) != 1:
        raise InputError(f"{WHERE}: expected one input ({input_name!r}), got {len(body['inputs'])}")
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict):
        raise InputError(f"{WHERE}: inputs[0] must be an object")
    missing = [k for k in ("name", "shape", "datatype") if k not in tensor]
    if missing:
        raise InputError(f"{WHERE}: inputs[0] lacks {missing}")
    if tensor["name"] != input_name:
        raise InputError(f"{WHERE}: inputs[0].name must be {input_name!r}, got {tensor['name']!r}")
    rows, cols = _shape(tensor["shape"], width, max_rows)
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in DTYPES:
        raise InputError(f"{WHERE}: datatype {datatype!r}: use one of {sorted(DTYPES)}")
    size = _params(tensor, "inputs[0]").get("binary_data_size")
    if size is not None:
        matrix = _binary_tensor(binary, size, datatype, rows, cols)
        matrix_rows: np.ndarray | list[list[Any]] = matrix
    else:
        if binary:
            raise InputError(
                f"{WHERE}: {len(binary)} bytes after the JSON header, but inputs[0] has no "
                "parameters.binary_data_size"
            )
        if "data" not in tensor:
            raise InputError(f"{WHERE}: inputs[0] lacks 'data' (or parameters.binary_data_size)")
        matrix_rows = _json_rows(tensor["data"], rows, cols)
    return InferRequest(body.get("id"), matrix_rows, _binary_output(body, output_name))


def render_infer(
    header: dict[str, Any], output_name: str, probs: np.ndarray, binary: bool
) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers: ``header`` (model_name, model_version, id,
    parameters) plus the one output, as JSON data or as bytes after the JSON."""
    probs = np.ascontiguousarray(probs, dtype="<f4")
    output: dict[str, Any] = {"name": output_name, "datatype": "FP32", "shape": list(probs.shape)}
    if not binary:
        output["data"] = probs.ravel().tolist()
        return orjson.dumps({**header, "outputs": [output]}), {}
    data = probs.tobytes()
    output["parameters"] = {"binary_data_size": len(data)}
    json_part = orjson.dumps({**header, "outputs": [output]})
    return json_part + data, {"Inference-Header-Content-Length": str(len(json_part))}


def _split(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return raw, b""
    try:
        n = int(header_length)
    except ValueError:
        n = -1
    if not 0 < n <= len(raw):
        raise InputError(
            f"{WHERE}: header Inference-Header-Content-Length={header_length!r} must be a "
            f"byte count within the body ({len(raw)} bytes)",
            400,
        )
    return raw[:n], raw[n:]


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"{WHERE}: {where}.parameters must be an object")
    return params


def _shape(shape: Any, width: int, max_rows: int) -> tuple[int, int]:
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(
            (isinstance(d, int) and not isinstance(d, bool))
            or (isinstance(d, float) and d.is_integer())  # 2.0 is an integer in JSON
            for d in shape
        )
    ):
        raise InputError(f"{WHERE}: shape must be [rows, {width}], got {shape!r}")
    rows, cols = (int(d) for d in shape)
    if cols != width or not 1 <= rows <= max_rows:
        raise InputError(f"{WHERE}: shape {[rows, cols]} does not match [1..{max_rows}, {width}]")
    return rows, cols


def _binary_tensor(binary: bytes, size: Any, datatype: str, rows: int, cols: int) -> np.ndarray:
    dtype = np.dtype(DTYPES[datatype])
    expected = rows * cols * dtype.itemsize
    if isinstance(size, bool) or not isinstance(size, int) or size != expected:
        raise InputError(
            f"{WHERE}: inputs[0].parameters.binary_data_size={size!r}: shape {[rows, cols]} "
            f"of {datatype} is {expected} bytes"
        )
    if len(binary) != size:
        raise InputError(
            f"{WHERE}: {len(binary)} bytes after the JSON header, binary_data_size says {size}"
        )
    return np.frombuffer(binary, dtype=dtype).reshape(rows, cols).astype(np.float64)


def _json_rows(data: Any, rows: int, cols: int) -> list[list[Any]]:
    if not isinstance(data, list) or not data:
        raise InputError(f"{WHERE}: data must be a non-empty list")
    if all(isinstance(r, list) for r in data):
        flat = [v for r in data for v in r]
    elif any(isinstance(r, list) for r in data):
        raise InputError(f"{WHERE}: data must be flat, or a list of rows")
    else:
        flat = data
    if len(flat) != rows * cols:
        raise InputError(f"{WHERE}: {len(flat)} values for shape {[rows, cols]}")
    return [flat[i * cols : (i + 1) * cols] for i in range(rows)]


def _binary_output(body: dict[str, Any], output_name: str) -> bool:
    """Binary when the request asks for it: ``parameters.binary_data_output`` (what
    tritonclient sends when no output is named), or ``binary_data`` on the named output."""
    binary = bool(_params(body, "request").get("binary_data_output", False))
    outputs = body.get("outputs")
    if outputs is None:
        return binary
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise InputError(f"{WHERE}: outputs must be a list of objects")
    for i, out in enumerate(outputs):
        if out.get("name") != output_name:
            raise InputError(
                f"{WHERE}: outputs[{i}].name {out.get('name')!r}: the model's only output is "
                f"{output_name!r}"
            )
        binary = bool(_params(out, f"outputs[{i}]").get("binary_data", binary))
    return binary
