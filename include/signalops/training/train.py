"""XGBoost training: walk-forward CV picks the number of trees, then one final fit.

Early stopping runs inside each CV fold on that fold's (purged) validation block; the final
model is fit on every pre-holdout row for the median of the folds' best tree counts, so the
holdout never influences fitting or early stopping, and the tree count the model keeps is
the one ONNX exports. Class imbalance: ``scale_pos_weight`` = negatives / positives of the
training rows (configurable). Same data, settings and seed give the same model.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from signalops.config import TrainingSettings, XGBoostParams
from signalops.evaluation.metrics import ml_metrics
from signalops.onnx_model import onnx_feature_names
from signalops.training.dataset import Dataset, Split, holdout_split, walk_forward

log = logging.getLogger(__name__)


def booster_params(
    cfg: TrainingSettings, params: XGBoostParams, scale_pos_weight: float
) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "max_depth": params.max_depth,
        "eta": params.eta,
        "subsample": params.subsample,
        "colsample_bytree": params.colsample_bytree,
        "min_child_weight": params.min_child_weight,
        "lambda": params.reg_lambda,
        "alpha": params.reg_alpha,
        "scale_pos_weight": scale_pos_weight,
        "seed": cfg.seed,
        "nthread": cfg.nthread,
        "verbosity": 0,
    }


@dataclass
class TrainResult:
    booster: Any  # xgboost.Booster, sliced to the kept trees
    n_trees: int
    params: dict[str, Any]
    folds: list[dict[str, float]]
    holdout: Split
    fit_seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _scale_pos_weight(y: np.ndarray, balance: bool) -> float:
    positives = float(y.sum())
    return (len(y) - positives) / positives if balance and positives > 0 else 1.0


def train_model(dataset: Dataset, cfg: TrainingSettings, params: XGBoostParams) -> TrainResult:
    import xgboost as xgb

    x, y, ts = dataset.x, dataset.y, dataset.ts
    label_end = dataset.label_end
    split = holdout_split(ts, cfg.holdout_fraction, label_end)
    dev_x, dev_y, dev_ts = x[split.train], y[split.train], ts[split.train]
    names = onnx_feature_names(x.shape[1])

    folds = []
    started = time.perf_counter()
    for k, fold in enumerate(walk_forward(dev_ts, cfg.cv_folds, label_end[split.train])):
        fold_y = dev_y[fold.train]
        p = booster_params(cfg, params, _scale_pos_weight(fold_y, cfg.balance_classes))
        dtrain = xgb.DMatrix(
            dev_x[fold.train], label=fold_y, feature_names=names, nthread=cfg.nthread
        )
        dvalid = xgb.DMatrix(
            dev_x[fold.valid], label=dev_y[fold.valid], feature_names=names, nthread=cfg.nthread
        )
        booster = xgb.train(
            p,
            dtrain,
            num_boost_round=params.num_boost_round,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=params.early_stopping_rounds,
            verbose_eval=False,
        )
        best = int(booster.best_iteration) + 1
        prob = booster.predict(dvalid, iteration_range=(0, best))
        metrics = ml_metrics(dev_y[fold.valid], prob)
        folds.append(
            {
                "fold": k,
                "train_rows": len(fold.train),
                "valid_rows": len(fold.valid),
                "best_trees": best,
                **metrics,
            }
        )
        log.info(
            "fold %d: %d train / %d valid rows, %d trees, auc %.4f, log loss %.4f",
            k,
            len(fold.train),
            len(fold.valid),
            best,
            metrics["roc_auc"],
            metrics["log_loss"],
        )
    cv_seconds = time.perf_counter() - started

    n_trees = max(1, int(np.median([f["best_trees"] for f in folds])))
    final_params = booster_params(cfg, params, _scale_pos_weight(dev_y, cfg.balance_classes))
    dtrain = xgb.DMatrix(dev_x, label=dev_y, feature_names=names, nthread=cfg.nthread)
    started = time.perf_counter()
    booster = xgb.train(final_params, dtrain, num_boost_round=n_trees, verbose_eval=False)
    fit_seconds = time.perf_counter() - started
    log.info(
        "final fit: %d rows, %d trees (median of CV best), %.2f s", len(dev_y), n_trees, fit_seconds
    )
    return TrainResult(
        booster=booster,
        n_trees=n_trees,
        params={**final_params, "num_boost_round": n_trees},
        folds=folds,
        holdout=split,
        fit_seconds=fit_seconds,
        timings={"cv_seconds": cv_seconds, "final_fit_seconds": fit_seconds},
    )
