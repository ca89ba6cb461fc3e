"""XGBoost training: walk-forward CV picks the number of trees, then one final fit.

Early stopping runs inside each CV fold on that fold's (purged) validation block; the final
model is fit on every pre-holdout row for the median of the folds' best tree counts, so the
holdout never influences fitting or early stopping, and the tree count the model keeps is
the one ONNX exports. Class imbalance: ``scale_pos_weight`` = negatives / positives of the
training rows (configurable). Same data, settings and seed give the same model.

:func:`cross_validate` is the CV alone (what a tuning trial scores, :mod:`.tune`);
:func:`train_model` is that CV followed by the final fit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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


class WalkForward:
    """A dataset's pre-holdout rows and their walk-forward folds, ready to fit.

    The holdout (the newest ``holdout_fraction``) is split off here and never kept, so
    whatever fits through this object cannot see it. ``cache=True`` keeps each fold's
    DMatrices for the next :func:`cross_validate` (a tuning study scores the same folds once
    per trial); without it each fold's matrices are built when needed and let go.
    """

    def __init__(self, dataset: Dataset, cfg: TrainingSettings, cache: bool = False):
        ts, label_end = dataset.ts, dataset.label_end
        self.holdout = holdout_split(ts, cfg.holdout_fraction, label_end)
        train = self.holdout.train
        self.x, self.y = dataset.x[train], dataset.y[train]
        self.splits = walk_forward(ts[train], cfg.cv_folds, label_end[train])
        self.names = onnx_feature_names(self.x.shape[1])
        self.nthread = cfg.nthread
        self._cache: dict[int, tuple[Any, Any]] | None = {} if cache else None

    def matrices(self, k: int) -> tuple[Any, Any]:
        """Fold ``k``'s (train, valid) ``xgboost.DMatrix``."""
        import xgboost as xgb

        if self._cache is not None and k in self._cache:
            return self._cache[k]
        fold = self.splits[k]
        dtrain = xgb.DMatrix(
            self.x[fold.train],
            label=self.y[fold.train],
            feature_names=self.names,
            nthread=self.nthread,
        )
        dvalid = xgb.DMatrix(
            self.x[fold.valid],
            label=self.y[fold.valid],
            feature_names=self.names,
            nthread=self.nthread,
        )
        if self._cache is not None:
            self._cache[k] = (dtrain, dvalid)
        return dtrain, dvalid


@dataclass
class CVResult:
    folds: list[dict[str, float]]  # per fold: rows, best_trees and ``ml_metrics``
    holdout: Split
    seconds: float


def cross_validate(
    data: Dataset | WalkForward,
    cfg: TrainingSettings,
    params: XGBoostParams,
    on_fold: Callable[[int, dict[str, float]], None] | None = None,
    verbose: bool = True,
) -> CVResult:
    """Walk-forward CV of ``params`` with early stopping per fold; no final fit.

    ``on_fold(k, record)`` is called after each fold is scored; an exception it raises (a
    pruned tuning trial) stops the CV there. ``verbose``: one INFO line per fold, else DEBUG.
    """
    import xgboost as xgb

    wf = data if isinstance(data, WalkForward) else WalkForward(data, cfg)
    folds: list[dict[str, float]] = []
    started = time.perf_counter()
    for k, fold in enumerate(wf.splits):
        p = booster_params(cfg, params, _scale_pos_weight(wf.y[fold.train], cfg.balance_classes))
        dtrain, dvalid = wf.matrices(k)
        booster = xgb.train(
            p,
            dtrain,
            num_boost_round=params.num_boost_round,
            evals=[(dvalid, "valid")],
            early_stopping_rounds=params.early_stopping_rounds,
            verbose_eval=False,
        )
        del dtrain
        best = int(booster.best_iteration) + 1
        prob = booster.predict(dvalid, iteration_range=(0, best))
        metrics = ml_metrics(wf.y[fold.valid], prob)
        record = {
            "fold": k,
            "train_rows": len(fold.train),
            "valid_rows": len(fold.valid),
            "best_trees": best,
            **metrics,
        }
        folds.append(record)
        log.log(
            logging.INFO if verbose else logging.DEBUG,
            "fold %d: %d train / %d valid rows, %d trees, auc %.4f, log loss %.4f",
            k,
            len(fold.train),
            len(fold.valid),
            best,
            metrics["roc_auc"],
            metrics["log_loss"],
        )
        if on_fold is not None:
            on_fold(k, record)
    return CVResult(folds, wf.holdout, time.perf_counter() - started)


def train_model(dataset: Dataset, cfg: TrainingSettings, params: XGBoostParams) -> TrainResult:
    """:func:`cross_validate` picks the tree count, then one fit on every pre-holdout row."""
    import xgboost as xgb

    wf = WalkForward(dataset, cfg)
    cv = cross_validate(wf, cfg, params)
    folds, split, dev_x, dev_y = cv.folds, wf.holdout, wf.x, wf.y

    n_trees = max(1, int(np.median([f["best_trees"] for f in folds])))
    final_params = booster_params(cfg, params, _scale_pos_weight(dev_y, cfg.balance_classes))
    dtrain = xgb.DMatrix(dev_x, label=dev_y, feature_names=wf.names, nthread=cfg.nthread)
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
        timings={"cv_seconds": cv.seconds, "final_fit_seconds": fit_seconds},
    )
