"""The ``describe`` step of retrain: what a version carries beside its model.

Three files, each for a later reader: SHAP importance and its plot on the holdout rows
(the evaluation report, the Signals page), the drift monitor's reference profile with the
null critical values of its statistics on the training rows (``drift_monitor``), and the
feature spec, the sidecar's input contract (``serving``).
"""

from __future__ import annotations

import json
from pathlib import Path

from signalops.config import Settings
from signalops.files import atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.rundir import (
    StepResult,
    load_booster,
    load_dataset,
    load_split,
    read_state,
)


def describe(settings: Settings, run_dir: Path) -> StepResult:
    """What a version carries beside its model: SHAP importance (+ plot) on the validation
    rows, the drift monitor's reference profile (with the null critical values of its
    statistics, on the training rows) and the feature spec, the sidecar's input contract."""
    import xgboost as xgb

    from signalops.drift.profile import build_profile, save_profile
    from signalops.features.definitions import get_feature_set
    from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME, onnx_feature_names
    from signalops.training.explain import shap_importance, write_shap

    run_id = read_state(run_dir)["mlflow_run_id"]
    dataset, split, booster = load_dataset(run_dir), load_split(run_dir), load_booster(run_dir)
    names, x = dataset.feature_names, dataset.x
    importance = shap_importance(booster, x[split.valid], names)
    write_shap(importance, run_dir / c.SHAP_JSON, run_dir / c.SHAP_PLOT)

    train_scores = booster.predict(
        xgb.DMatrix(x[split.train], feature_names=onnx_feature_names(len(names)))
    )
    profile = build_profile(
        dataset.frame.iloc[split.train],
        names,
        scores=train_scores,
        labels=dataset.y[split.train],
        quantile=settings.drift.null_quantile,
        blocks=settings.drift.null_blocks,
        significance=settings.drift.significance,
    )
    profile["feature_set_version"] = dataset.feature_set_version
    save_profile(profile, run_dir / c.REFERENCE_PROFILE)

    spec = get_feature_set(dataset.feature_set_version).spec(dataset.horizon_bars)
    spec["input"], spec["output"] = INPUT_NAME, OUTPUT_NAME
    spec["bar_minutes"] = int(dataset.bar.total_seconds() // 60)
    atomic_write_bytes(run_dir / c.FEATURE_SPEC, json.dumps(spec, indent=2).encode())
    top = ", ".join(f"{k} {v:.3g}" for k, v in list(importance.items())[:3])
    summary = (
        f"described: SHAP top {top}; reference profile of {len(split.train)} training rows; "
        f"feature spec {dataset.feature_set_version} ({len(names)} inputs)"
    )
    return StepResult(
        str(run_dir), run_id, summary, {"shap_top": dict(list(importance.items())[:10])}
    )
