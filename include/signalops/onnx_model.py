"""onnxruntime sessions for the exported models (shared by training's parity check and the
sidecar; light: imports only numpy and onnxruntime, lazily).

The graph takes ``features`` (float32 [n, k]) and gives ``probabilities`` ([n, 2]); P(up)
is column 1. Sessions run with one intra-op thread and no spinning: on a small machine a
spinning pool burns the CPU that the HTTP server needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def onnx_feature_names(n: int) -> list[str]:
    """onnxmltools' XGBoost converter needs features named f0..fN (so does the MLflow model)."""
    return [f"f{i}" for i in range(n)]


def session_options() -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def load_session(model: bytes | Path) -> Any:
    import onnxruntime as ort

    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, session_options(), providers=["CPUExecutionProvider"])


def predict_onnx(session: Any, x: np.ndarray) -> np.ndarray:
    """P(up) for each row of ``x``, asking onnxruntime for the probability tensor only."""
    out = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
    return np.asarray(out[:, 1], dtype=np.float64)
