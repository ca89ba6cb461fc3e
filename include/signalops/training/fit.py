"""The ``train`` step of retrain: fit the model on the run's dataset, record and log it.

The fitting itself (walk-forward CV with early stopping, then the final fit) is
:func:`signalops.training.train.train_model`; this step runs it on ``dataset.arrow`` with
the run's hyperparameters (its tuning's best, else the plan's: ``rundir.read_params``),
writes the booster (``model.ubj``), the holdout split (``split.npz``) and ``train.json``,
and logs parameters and per-fold metrics to the run's MLflow run. :func:`cv_mean` is the
figure the folds agree on (mean AUC, log loss, accuracy, tree count).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from signalops.config import Settings
from signalops.files import atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.rundir import (
    SPLIT,
    TRAIN_JSON,
    StepResult,
    load_dataset,
    read_params,
    read_state,
)

CV_FIGURES = ("roc_auc", "log_loss", "accuracy", "best_trees")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cv_mean(folds: list[dict[str, Any]]) -> dict[str, float]:
    """The mean over the walk-forward folds of each of :data:`CV_FIGURES`."""
    return {k: float(np.mean([f[k] for f in folds])) for k in CV_FIGURES}


def train(settings: Settings, run_dir: Path) -> StepResult:
    """Walk-forward CV (early stopping per fold) and the final fit -> ``model.ubj``."""
    from signalops.registry import Registry
    from signalops.training.train import train_model

    params = read_params(run_dir)
    run_id = read_state(run_dir)["mlflow_run_id"]
    dataset = load_dataset(run_dir)
    started = time.perf_counter()
    result = train_model(dataset, settings.training, params)
    seconds = time.perf_counter() - started
    result.booster.save_model(str(run_dir / c.NATIVE_MODEL))
    np.savez(run_dir / SPLIT, train=result.holdout.train, holdout=result.holdout.valid)
    cv = cv_mean(result.folds)
    record = {
        "n_trees": result.n_trees,
        "params": result.params,
        "folds": result.folds,
        "cv_mean": cv,
        "train_rows": len(result.holdout.train),
        "holdout_rows": len(result.holdout.valid),
        "seconds": {**result.timings, "train_step": seconds},
        "peak_rss_mb": peak_rss_mb(),
    }
    atomic_write_bytes(run_dir / TRAIN_JSON, json.dumps(record, indent=2, default=str).encode())

    registry = Registry(settings)
    registry.log_params(
        run_id,
        {
            **{f"xgb.{k}": v for k, v in params.model_dump().items()},
            **{f"booster.{k}": v for k, v in result.params.items()},
            "n_trees": result.n_trees,
            "train_rows": len(result.holdout.train),
            "holdout_rows": len(result.holdout.valid),
        },
    )
    for fold in result.folds:
        registry.log_metrics(
            run_id,
            {f"cv_{k}": float(v) for k, v in fold.items() if k != "fold"},
            step=int(fold["fold"]),
        )
    registry.log_metrics(
        run_id,
        {
            **{f"cv_mean_{k}": v for k, v in cv.items()},
            "n_trees": result.n_trees,
            "cv_seconds": result.timings["cv_seconds"],
            "final_fit_seconds": result.timings["final_fit_seconds"],
            "training_seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
        },
    )
    summary = (
        f"trained: {len(result.folds)} walk-forward folds (mean AUC {cv['roc_auc']:.4f}, "
        f"log loss {cv['log_loss']:.4f}), final fit on {len(result.holdout.train)} rows with "
        f"{result.n_trees} trees in {result.timings['final_fit_seconds']:.1f} s; "
        f"{len(result.holdout.valid)} holdout rows kept out; "
        f"peak RSS {record['peak_rss_mb']:.0f} MB"
    )
    return StepResult(str(run_dir), run_id, summary, {"n_trees": result.n_trees, **cv})
