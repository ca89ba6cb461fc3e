"""The ``tune`` step of retrain: an Optuna study over the XGBoost hyperparameters.

The objective is the figure the train step reports, the mean over the purged walk-forward
CV folds (:func:`~signalops.training.train.cross_validate`) of ``tuning.metric`` (default:
``evaluation.primary_metric``), on the pre-holdout rows only: the holdout is split off before
the study and never scored. The run's current parameters are enqueued as trial 0, so the best
trial is never worse than what the run would have trained with (ties keep trial 0). A TPE
sampler with ``tuning.seed`` makes the study repeatable (same data and settings, same
trials), a median pruner stops a trial whose running CV mean trails the other trials' after
``tuning.prune_after_folds`` folds, and ``tuning.timeout_s`` bounds the study (the trial
running then finishes). Every trial is a nested MLflow run under the retrain's run.

Layout: :mod:`~signalops.training.study` runs the study, :mod:`~signalops.training.tuned`
stores its result and decides when the next one is due; this module is the step.

When a run tunes (:func:`~signalops.training.tuned.tuning_plan`): when its ``tune_trials``
param says so; else, with ``tuning.trials`` > 0, when the feature set has no tuned
parameters yet or they are older than ``tuning.every_days``, or when the drift asset
triggered the run (``tuning.on_drift``).

The best parameters go to ``best_params.json`` (what the train step fits with, and an
artifact of the version), to the run's MLflow params, and to the registered model's tag
``signalops.tuned_params.<feature set>``, which
:func:`~signalops.training.tuned.read_tuned` reads for every later
retrain's plan: they train with them until the next tuning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from signalops.config import Settings
from signalops.files import atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.rundir import (
    DATASET_META,
    TUNING_JSON,
    StepResult,
    load_dataset,
    read_request,
    read_state,
    save_state,
)
from signalops.training.study import MlflowTrials, StudyResult, run_study
from signalops.training.tuned import TunedParams, tuned_tag


def _params_text(values: Mapping[str, float]) -> str:
    return ", ".join(f"{n}={v:.4g}" for n, v in values.items())


def tune(settings: Settings, run_dir: Path) -> StepResult:
    """Tune when the plan says so (``best_params.json``, stored for later retrains)."""
    from signalops.registry import Registry
    from signalops.training.assemble import AlreadyTrained, training_key

    request = read_request(run_dir)
    state = read_state(run_dir)
    run_id = state["mlflow_run_id"]
    registry = Registry(settings)
    if request.tune_trials == 0:
        for stale in (c.BEST_PARAMS, TUNING_JSON):  # from an earlier plan of this run key
            (run_dir / stale).unlink(missing_ok=True)
        registry.set_tags(run_id, {c.TAG_PARAMS_SOURCE: request.params_source})
        values = {n: getattr(request.params, n) for n in settings.tuning.space.ranges()}
        return StepResult(
            str(run_dir),
            run_id,
            f"no tuning: {request.tune_reason}; training with {request.params_source}: "
            f"{_params_text(values)}",
            {"tuned": False, "reason": request.tune_reason},
        )

    input_key = json.loads((run_dir / DATASET_META).read_text())["training_key"]
    done = run_dir / TUNING_JSON
    previous = json.loads(done.read_text()) if done.exists() else {}
    dataset = load_dataset(run_dir)
    if previous.get("input_key") == input_key and previous.get("mlflow_run_id") == run_id:
        result = StudyResult.from_dict(previous["study"])  # a retried task: the study stands
    else:
        for child in registry.child_runs(run_id):  # a killed attempt's trials
            if child.info.status == "RUNNING":
                registry.set_tags(child.info.run_id, {c.TAG_TRIAL_STATE: "failed"})
                registry.end_run(child.info.run_id, "FAILED")
        metric = settings.tuning.metric or settings.evaluation.primary_metric
        result = run_study(
            dataset,
            settings,
            request.params,
            request.tune_trials,
            fixed=request.fixed,
            recorder=MlflowTrials(registry, run_id, request.run_key, metric),
        )
        record = {"input_key": input_key, "mlflow_run_id": run_id, "study": result.as_dict()}
        atomic_write_bytes(done, json.dumps(record, indent=2, default=float).encode())

    tuned_at = datetime.now(UTC)
    best = {
        "feature_set_version": request.feature_set_version,
        "params": result.best.model_dump(),
        "tuned": result.best_values,
        "fixed": request.fixed,
        "metric": result.metric,
        "direction": result.direction,
        "value": result.value,
        "incumbent_value": result.incumbent_value,
        "incumbent_source": request.params_source,
        "best_trial": result.best_trial,
        "trials": len(result.trials),
        "complete": result.count("complete"),
        "pruned": result.count("pruned"),
        "seed": settings.tuning.seed,
        "timed_out": result.timed_out,
        "reason": request.tune_reason,
        "run_key": request.run_key,
        "mlflow_run_id": run_id,
        "tuned_at": tuned_at.isoformat(),
    }
    atomic_write_bytes(run_dir / c.BEST_PARAMS, json.dumps(best, indent=2).encode())
    stored = TunedParams(
        params=result.best_values,
        tuned_at=tuned_at,
        run_key=request.run_key,
        mlflow_run_id=run_id,
        metric=result.metric,
        value=result.value,
        incumbent_value=result.incumbent_value,
        trials=len(result.trials),
    )
    registry.ensure_model()
    registry.set_model_tag(tuned_tag(request.feature_set_version), stored.as_json())

    registry.log_params(
        run_id,
        {
            **{f"tuned.{n}": v for n, v in result.best_values.items()},
            "tuning.trials": request.tune_trials,
            "tuning.metric": result.metric,
            "tuning.seed": settings.tuning.seed,
            "tuning.reason": request.tune_reason,
        },
    )
    registry.log_metrics(
        run_id,
        {
            f"tuning_best_{result.metric}": result.value,
            f"tuning_incumbent_{result.metric}": result.incumbent_value,
            "tuning_best_trial": result.best_trial,
            "tuning_trials": len(result.trials),
            "tuning_trials_complete": result.count("complete"),
            "tuning_trials_pruned": result.count("pruned"),
            "tuning_seconds": result.seconds,
            "tuning_trials_per_minute": 60 * len(result.trials) / max(result.seconds, 1e-9),
        },
    )
    source = f"tuned in this run (best of {len(result.trials)} trials)"
    key = training_key(settings, dataset, result.best)
    registry.set_tags(run_id, {c.TAG_PARAMS_SOURCE: source, c.TAG_TRAINING_KEY: key})
    registry.log_artifact(run_id, run_dir / c.BEST_PARAMS, "tuning")
    registry.log_artifact(run_id, done, "tuning")
    save_state(run_dir, training_key=key, tuned=True)

    if not request.force:
        existing = registry.find_version(c.TAG_TRAINING_KEY, key)
        if existing is not None:
            error = AlreadyTrained(existing.version, key)
            registry.set_tags(run_id, {c.TAG_STATUS_REASON: f"tuned, then skipped: {error}"})
            registry.end_run(run_id, "FINISHED")
            raise error

    better = "better than" if result.best_trial != 0 else "no better than"
    summary = (
        f"tuned ({request.tune_reason}): {len(result.trials)} trials "
        f"({result.count('complete')} complete, {result.count('pruned')} pruned"
        + (", stopped by tuning.timeout_s" if result.timed_out else "")
        + f") in {result.seconds:.1f} s; best trial {result.best_trial}: mean CV "
        f"{result.metric} {result.value:.4f}, {better} the run's parameters "
        f"({result.incumbent_value:.4f}); fitting with {_params_text(result.best_values)}; "
        f"stored for feature set {request.feature_set_version}"
    )
    return StepResult(
        str(run_dir),
        run_id,
        summary,
        {
            "tuned": True,
            "trials": len(result.trials),
            "complete": result.count("complete"),
            "pruned": result.count("pruned"),
            "metric": result.metric,
            "value": result.value,
            "incumbent_value": result.incumbent_value,
            "best_trial": result.best_trial,
            "params": result.best_values,
        },
    )
