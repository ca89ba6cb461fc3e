"""Global explanation: mean |SHAP| per feature from XGBoost's own TreeSHAP (pred_contribs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

MAX_ROWS = 10_000  # evenly spaced holdout rows: stable means at a bounded cost


def shap_importance(booster: Any, x: np.ndarray, feature_names: list[str]) -> dict[str, float]:
    """feature -> mean |SHAP value| (log-odds units), largest first."""
    import xgboost as xgb

    take = np.linspace(0, len(x) - 1, min(MAX_ROWS, len(x))).round().astype(int)
    from signalops.onnx_model import onnx_feature_names

    dmatrix = xgb.DMatrix(x[take], feature_names=onnx_feature_names(x.shape[1]))
    contribs = booster.predict(dmatrix, pred_contribs=True)
    mean_abs = np.abs(contribs[:, :-1]).mean(axis=0)  # the last column is the bias
    order = np.argsort(-mean_abs, kind="stable")
    return {feature_names[i]: float(mean_abs[i]) for i in order}


def write_shap(importance: dict[str, float], json_path: Path, plot_path: Path) -> None:
    """The importance as JSON and as a horizontal bar chart (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    json_path.write_text(json.dumps(importance, indent=2))
    names = list(importance)[::-1]
    values = [importance[n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(names) + 1.2))
    ax.barh(names, values, color="#3b6ea8")
    ax.set_xlabel("mean |SHAP value| (log-odds)")
    ax.set_title("Global feature importance (holdout)")
    ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    fig.savefig(plot_path, dpi=110)
    plt.close(fig)
