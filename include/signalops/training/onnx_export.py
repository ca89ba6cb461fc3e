"""ONNX export of the XGBoost booster and the parity gate that guards it.

The converter (onnxmltools 1.16) emits one ``TreeEnsembleClassifier`` with outputs
``label`` and ``probabilities`` (a float tensor, no ZipMap); the sidecar asks onnxruntime
for ``probabilities`` only. Parity is checked on the whole holdout: the largest absolute
difference between P(up) from onnxruntime and from native XGBoost, the predicted labels at
the decision threshold, and the number of trees in the graph against the trees the booster
keeps. A model that fails any of them is never registered for serving.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from signalops.errors import BadInputError
from signalops.files import atomic_write_bytes
from signalops.onnx_model import INPUT_NAME, load_session, onnx_feature_names, predict_onnx

log = logging.getLogger(__name__)


class ParityError(BadInputError):
    """The ONNX model does not reproduce the native XGBoost model."""

    def __init__(self, report: ParityReport):
        self.report = report
        super().__init__(f"ONNX parity failed, model not registered: {'; '.join(report.failures)}")


@dataclass
class ParityReport:
    rows: int
    max_abs_error: float
    tolerance: float
    label_mismatches: int
    onnx_trees: int
    booster_trees: int
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def export_onnx(booster: Any, n_features: int, path: Path) -> bytes:
    """Convert the booster (features named f0..fN) and write ``path`` atomically."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    names = booster.feature_names
    expected = onnx_feature_names(n_features)
    if names is not None and list(names) != expected:
        raise BadInputError(
            f"the booster's features must be named f0..f{n_features - 1} for onnxmltools, "
            f"got {list(names)[:5]}..."
        )
    model = onnxmltools.convert_xgboost(
        booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))]
    )
    model.doc_string = "signalops: P(up) in output 'probabilities'[:, 1]"
    data: bytes = model.SerializeToString()
    atomic_write_bytes(path, data)
    return data


def onnx_tree_count(model: bytes | Path) -> int:
    """Distinct trees in the graph's tree-ensemble node(s)."""
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    trees = 0
    for node in proto.graph.node:
        if node.op_type.startswith("TreeEnsemble"):
            for attr in node.attribute:
                if attr.name == "nodes_treeids":
                    trees += len(set(attr.ints))
    return trees


def check_parity(
    booster: Any,
    model: bytes | Path,
    x: np.ndarray,
    tolerance: float,
    threshold: float = 0.5,
) -> tuple[ParityReport, np.ndarray, np.ndarray]:
    """Compare ONNX and native XGBoost on ``x``; returns the report and both probabilities."""
    import xgboost as xgb

    if len(x) == 0:
        raise BadInputError("parity check needs at least one row (the holdout is empty)")
    dmatrix = xgb.DMatrix(x, feature_names=onnx_feature_names(x.shape[1]))
    p_native = booster.predict(dmatrix).astype(np.float64)
    p_onnx = predict_onnx(load_session(model), x)
    error = float(np.max(np.abs(p_onnx - p_native)))
    mismatches = int(np.sum((p_onnx > threshold) != (p_native > threshold)))
    onnx_trees, booster_trees = onnx_tree_count(model), int(booster.num_boosted_rounds())
    failures = []
    if not error <= tolerance:  # also catches NaN
        failures.append(f"max |p_onnx - p_xgboost| = {error:.3g} > {tolerance:g} on {len(x)} rows")
    if mismatches:
        failures.append(f"{mismatches} of {len(x)} predicted labels differ at {threshold}")
    if onnx_trees != booster_trees:
        failures.append(f"ONNX graph holds {onnx_trees} trees, the booster keeps {booster_trees}")
    report = ParityReport(len(x), error, tolerance, mismatches, onnx_trees, booster_trees, failures)
    log.info(
        "parity on %d holdout rows: max |dp| %.3g (tolerance %g), %d label mismatches, "
        "%d/%d trees: %s",
        len(x),
        error,
        tolerance,
        mismatches,
        onnx_trees,
        booster_trees,
        "passed" if report.passed else "FAILED",
    )
    return report, p_native, p_onnx
