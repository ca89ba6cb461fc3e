"""Settings of a model's life: training, the evaluation gate, drift monitoring, rollout.

``training`` (with its ``xgboost`` hyperparameters) shapes the retrain DAG's fit, and
``tuning`` its optional Optuna study over those hyperparameters;
``evaluation`` the holdout report and the promotion gate; ``drift`` the hourly drift
monitor and its calibration; ``rollout`` the canary state machine that moves traffic from
the champion to a challenger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from signalops.config.base import Section


class XGBoostParams(Section):
    """Hyperparameters of ``xgboost.train`` (overridable per run from the DAG's params)."""

    max_depth: int = Field(4, ge=1, le=16)
    eta: float = Field(0.05, gt=0, le=1)
    subsample: float = Field(0.8, gt=0, le=1)
    colsample_bytree: float = Field(0.8, gt=0, le=1)
    min_child_weight: float = Field(5.0, ge=0)
    reg_lambda: float = Field(1.0, ge=0)
    reg_alpha: float = Field(0.0, ge=0)
    num_boost_round: int = Field(400, ge=1, le=5000)
    early_stopping_rounds: int = Field(30, ge=1)


class TrainingSettings(Section):
    window_days: int = Field(gt=0, description="training window ending at the run's end")
    min_rows: int = Field(gt=0, description="refuse to train on fewer labeled rows")
    holdout_fraction: float = Field(0.2, gt=0, lt=0.5, description="out-of-time holdout share")
    cv_folds: int = Field(4, ge=2, le=20)
    seed: int = 42
    nthread: int = Field(2, ge=1)
    balance_classes: bool = Field(True, description="scale_pos_weight = negatives / positives")
    max_parity_error: float = Field(1e-5, gt=0)
    xgboost: XGBoostParams = XGBoostParams()


# Searched on a log scale when the range's low end is above 0 (they span decades).
LOG_SCALE = frozenset({"eta", "min_child_weight", "reg_lambda", "reg_alpha"})


class TuningSpace(Section):
    """Search ranges (low, high) of the tuning study; equal bounds fix the parameter.

    Each bound must itself be a valid ``training.xgboost`` value. ``num_boost_round`` and
    ``early_stopping_rounds`` are not searched: early stopping picks the trees.
    """

    max_depth: tuple[int, int] = Field((2, 8), description="range of max_depth")
    eta: tuple[float, float] = Field((0.01, 0.3), description="range of the learning rate (log)")
    subsample: tuple[float, float] = Field((0.5, 1.0), description="range of subsample")
    colsample_bytree: tuple[float, float] = Field(
        (0.5, 1.0), description="range of colsample_bytree"
    )
    min_child_weight: tuple[float, float] = Field(
        (0.5, 50.0), description="range of min_child_weight (log)"
    )
    reg_lambda: tuple[float, float] = Field(
        (0.01, 10.0), description="range of the L2 regularization (log)"
    )
    reg_alpha: tuple[float, float] = Field(
        (0.0, 1.0), description="range of the L1 regularization (log when low > 0)"
    )

    @field_validator(
        "max_depth",
        "eta",
        "subsample",
        "colsample_bytree",
        "min_child_weight",
        "reg_lambda",
        "reg_alpha",
        mode="before",
    )
    @classmethod
    def _split_range(cls, value: Any) -> Any:
        return tuple(v.strip() for v in value.split(",")) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _valid_ranges(self) -> TuningSpace:
        for name, (low, high) in self.ranges().items():
            if low > high:
                raise ValueError(f"tuning.space.{name}: low {low} is above high {high}")
            for bound in (low, high):
                try:
                    XGBoostParams.model_validate({name: bound})
                except ValueError:
                    limits = XGBoostParams.model_fields[name].metadata
                    raise ValueError(
                        f"tuning.space.{name}: bound {bound} is not a valid "
                        f"training.xgboost.{name} ({', '.join(map(repr, limits))})"
                    ) from None
        return self

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {name: getattr(self, name) for name in type(self).model_fields}


class TuningSettings(Section):
    """Hyperparameter tuning of retrain: an Optuna study on the walk-forward CV (``tune``).

    Off unless asked: ``trials`` > 0 turns on the schedule (``every_days``, ``on_drift``);
    a run's ``tune_trials`` param tunes that run whatever the schedule says (0: not at all).
    """

    trials: int = Field(
        0,
        ge=0,
        description="trials of a study the schedule starts; 0: no scheduled tuning, only "
        "runs with the tune_trials param tune",
    )
    every_days: float = Field(
        7.0,
        ge=0,
        description="with trials > 0: tune when the stored tuned parameters are older than "
        "this (or missing); 0: not on age",
    )
    on_drift: bool = Field(
        True, description="with trials > 0: tune in runs triggered by signalops/drift_detected"
    )
    timeout_s: float = Field(
        900.0, gt=0, description="a study starts no trial after this many seconds"
    )
    seed: int = Field(
        42, description="TPE sampler seed: same data and settings give the same best trial"
    )
    metric: Literal["roc_auc", "log_loss", "accuracy", "brier"] | None = Field(
        None,
        description="mean walk-forward CV figure the study optimizes; none: "
        "evaluation.primary_metric",
    )
    prune_startup_trials: int = Field(
        3, ge=0, description="complete trials before the median pruner stops any trial"
    )
    prune_after_folds: int = Field(
        1, ge=1, description="a trial can be pruned once this many CV folds are scored"
    )
    use_tuned: bool = Field(
        True,
        description="retrains train with the stored tuned parameters of their feature set "
        "(over training.xgboost); false: training.xgboost only",
    )
    space: TuningSpace = TuningSpace()


class EvaluationSettings(Section):
    """The holdout report and the promotion gate (rules: ``signalops.evaluation.gate.RULES``)."""

    primary_metric: Literal["roc_auc", "log_loss", "accuracy", "brier"] = "roc_auc"
    non_inferiority_margin: float = Field(
        0.01,
        ge=0,
        description="loss vs the champion on the primary metric (its units, e.g. 0.01 AUC) "
        "that counts as material: rejected only when the whole paired-bootstrap CI of "
        "challenger - champion lies below -margin",
    )
    baseline_margin: float = Field(
        0.0,
        ge=0,
        description="how far the challenger may trail the naive baseline (primary metric and "
        "log loss, in their units); 0: it must beat it",
    )
    bootstrap_samples: int = Field(500, ge=50)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    min_roc_auc: float = Field(0.52, ge=0, le=1)
    max_log_loss: float = Field(0.70, gt=0)
    min_sharpe: float = Field(
        0.0, description="the holdout backtest's annualized Sharpe after costs must exceed this"
    )
    strategy: Literal["long_short", "long_flat"] = "long_short"
    threshold: float = Field(0.5, gt=0, lt=1)
    cost_bps: float = Field(1.0, ge=0, description="cost per unit of position change, basis points")
    first_model_becomes_champion: bool = True

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # The old champion rule (lower CI end >= -tolerance) failed any small holdout; its
        # setting is gone rather than silently reinterpreted.
        if isinstance(data, Mapping) and "tolerance" in data:
            raise ValueError(
                "evaluation.tolerance was replaced by evaluation.non_inferiority_margin "
                "(a challenger is rejected only when the whole CI lies below -margin)"
            )
        return data


class DriftSettings(Section):
    """The hourly drift monitor. Severity rests on effect sizes, never on p-values alone."""

    window_bars: int = Field(gt=0, description="current window: the last N bars of each symbol")
    min_rows: int = Field(gt=0, description="fewer current rows: the check is skipped")
    method: Literal["psi", "ks", "wasserstein"] = Field(
        "psi", description="what flags a feature as drifted"
    )
    psi_moderate: float = Field(0.1, gt=0, description="PSI from here: moderate drift")
    psi_significant: float = Field(0.2, gt=0, description="PSI from here: significant drift")
    ks_p_value: float = Field(0.05, gt=0, lt=1, description="KS: p below this ...")
    ks_min_statistic: float = Field(0.1, gt=0, le=1, description="... and D at least this")
    wasserstein_threshold: float = Field(
        0.1, gt=0, description="normalized Wasserstein distance (in reference std units)"
    )
    share_medium: float = Field(0.2, gt=0, le=1, description="drifted share: medium")
    share_high: float = Field(0.5, gt=0, le=1, description="drifted share: high")
    accuracy_drop_medium: float = Field(0.05, gt=0, le=1)
    accuracy_drop_high: float = Field(0.10, gt=0, le=1)
    min_outcomes: int = Field(gt=0, description="matured labels needed for label drift")
    report_sample_rows: int = Field(5_000, gt=0, description="rows of each side in Evidently")
    realert_hours: float = Field(
        24.0, gt=0, description="the same (or lower) severity alerts again only after this"
    )
    # Calibration (README, "Drift: how severity is calibrated"): the first two are used when
    # retrain builds the reference profile, the last one also at check time.
    null_quantile: float = Field(
        0.99, gt=0.5, lt=1, description="critical value: this quantile of reference windows"
    )
    null_blocks: int = Field(
        200, ge=50, le=5000, description="reference windows drawn per window size"
    )
    significance: float = Field(
        0.005,
        gt=0,
        lt=0.5,
        description="level of each overall test: drifted-feature count, score PSI, accuracy",
    )


class RolloutSettings(Section):
    """The canary state machine: steps, how long each lasts, the guards."""

    steps: tuple[float, ...] = Field(
        (0.0, 0.01, 0.10, 0.50, 1.0), description="canary weights; 0 = shadow, 1 = promote"
    )
    min_step_minutes: float = Field(60.0, ge=0, description="time at a step before advancing")
    max_step_hours: float = Field(
        24.0, gt=0, description="held at one step longer than this: the rollout-stuck alert"
    )
    min_predictions: int = Field(500, gt=0, description="challenger rows at a step to judge")
    max_latency_ratio: float = Field(1.5, gt=0, description="challenger p95 / champion p95")
    latency_slack_ms: float = Field(2.0, ge=0, description="absolute slack on that ratio")
    max_score_psi: float = Field(0.25, gt=0, description="challenger vs champion scores")
    min_compare_rows: int = Field(
        300, gt=0, description="challenger rows before latency p95 and score PSI judge"
    )
    min_agreement: float = Field(
        0.6, ge=0, le=1, description="shadow: same BUY/SELL/HOLD as the champion"
    )
    min_outcomes: int = Field(200, gt=0, description="matured outcomes per version to judge")
    significance: float = Field(0.05, gt=0, lt=1, description="one-sided test level")
    max_error_rate_excess: float = Field(
        0.01, ge=0, le=1, description="challenger error rate (failed scorings) over champion's"
    )
    watch_hours: float = Field(
        24.0, ge=0, description="after a promotion: guards on the new champion (0 = off)"
    )
    watch_baseline_hours: float = Field(
        24.0, gt=0, description="watch: previous champion's record, its last hours as champion"
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _split_steps(cls, value: Any) -> Any:
        return tuple(float(v) for v in value.split(",")) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _steps_rise_to_one(self) -> RolloutSettings:
        steps = list(self.steps)
        if not steps or steps != sorted(steps) or steps[-1] != 1.0 or steps[0] < 0:
            raise ValueError(f"rollout.steps must rise from >= 0 to 1.0, got {steps}")
        return self
