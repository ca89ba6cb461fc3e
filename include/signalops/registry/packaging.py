"""A model version as MLflow packages it: the xgboost flavor (so ``mlflow models serve``
and ``mlflow.pyfunc.load_model`` work on any version) plus every signalops artifact the
sidecar, the drift monitor and the Signals page read (ONNX graph, feature spec, reference
profile, evaluation, SHAP, parity). The registry's side of ``retrain.register``: training
code hands over a folder and a booster and never imports MLflow itself."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from signalops.registry import contracts as c

# What a version carries beside the MLflow model, each written by a retrain step.
VERSION_FILES = (
    c.ONNX_MODEL,  # export
    c.PARITY_JSON,  # export
    c.FEATURE_SPEC,  # describe
    c.REFERENCE_PROFILE,  # describe
    c.SHAP_JSON,  # describe
    c.SHAP_PLOT,  # describe
    c.EVALUATION_JSON,  # evaluate
    c.EVALUATION_MD,  # evaluate
)


def package_model(run_dir: Path, booster: Any, n_features: int) -> Path:
    """``run_dir/model``: a complete MLflow model (xgboost flavor, inputs ``f0..fN``) plus
    every file of ``VERSION_FILES`` from ``run_dir``; written aside and renamed into place,
    so a retried step never sees half a folder."""
    import mlflow.xgboost
    import xgboost
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from signalops.onnx_model import onnx_feature_names

    target = run_dir / c.MODEL_DIR
    staging = run_dir / f".{c.MODEL_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    signature = ModelSignature(
        inputs=Schema([ColSpec("float", name) for name in onnx_feature_names(n_features)]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]),
    )
    # Explicit requirements: MLflow would otherwise infer them in a subprocess (~15 s).
    mlflow.xgboost.save_model(
        booster,
        str(staging),
        model_format="ubj",
        signature=signature,
        pip_requirements=[f"xgboost=={xgboost.__version__}", f"numpy=={np.__version__}"],
    )
    for name in VERSION_FILES:
        shutil.copy2(run_dir / name, staging / name)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target
