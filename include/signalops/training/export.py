"""The ``export`` step of retrain: the booster as ONNX, and the parity gate.

The conversion and the comparison are :mod:`signalops.training.onnx_export`; this step
runs them on the whole holdout, writes ``parity.json`` and the holdout's scores from both
runtimes (``holdout_scores.parquet``, what ``evaluate`` judges), and logs the result. A
parity failure marks the MLflow run FAILED and ends the retrain run here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from signalops.config import Settings
from signalops.files import atomic_write_bytes, atomic_write_table
from signalops.registry import contracts as c
from signalops.training.rundir import (
    HOLDOUT_SCORES,
    StepResult,
    load_booster,
    load_dataset,
    load_split,
    read_state,
)


def export(settings: Settings, run_dir: Path) -> StepResult:
    """ONNX export and the parity gate on the whole holdout; a failure ends the run here."""
    from signalops.registry import Registry
    from signalops.training.onnx_export import ParityError, check_parity, export_onnx

    run_id = read_state(run_dir)["mlflow_run_id"]
    dataset, split, booster = load_dataset(run_dir), load_split(run_dir), load_booster(run_dir)
    x = dataset.x
    model = export_onnx(booster, x.shape[1], run_dir / c.ONNX_MODEL)
    report, p_native, p_onnx = check_parity(
        booster,
        model,
        x[split.valid],
        settings.training.max_parity_error,
        settings.evaluation.threshold,
    )
    atomic_write_bytes(run_dir / c.PARITY_JSON, json.dumps(report.as_dict(), indent=2).encode())
    holdout = dataset.frame.iloc[split.valid][["symbol", "ts", "label_return", "label_up"]]
    scores = holdout.assign(p_xgboost=p_native, p_onnx=p_onnx)
    atomic_write_table(run_dir / HOLDOUT_SCORES, pa.Table.from_pandas(scores, preserve_index=False))
    registry = Registry(settings)
    registry.set_tags(
        run_id,
        {
            c.TAG_PARITY_ERROR: f"{report.max_abs_error:.3g}",
            c.TAG_PARITY: "passed" if report.passed else "failed",
        },
    )
    registry.log_metrics(
        run_id,
        {
            "parity_max_abs_error": report.max_abs_error,
            "parity_label_mismatches": report.label_mismatches,
        },
    )
    registry.log_artifact(run_id, run_dir / c.PARITY_JSON, "evaluation")
    if not report.passed:
        error = ParityError(report)
        registry.set_tags(run_id, {c.TAG_STATUS_REASON: str(error)})
        registry.end_run(run_id, "FAILED")
        raise error
    summary = (
        f"ONNX export: {report.onnx_trees} trees, max |p_onnx - p_xgboost| "
        f"{report.max_abs_error:.2e} on {report.rows} holdout rows (tolerance "
        f"{report.tolerance:g}), labels identical: parity passed"
    )
    return StepResult(str(run_dir), run_id, summary, {"parity_max_abs_error": report.max_abs_error})
