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

When a run tunes (:func:`tuning_plan`): when its ``tune_trials`` param says so; else, with
``tuning.trials`` > 0, when the feature set has no tuned parameters yet or they are older
than ``tuning.every_days``, or when the drift asset triggered the run (``tuning.on_drift``).

The best parameters go to ``best_params.json`` (what the train step fits with, and an
artifact of the version), to the run's MLflow params, and to the registered model's tag
``signalops.tuned_params.<feature set>``, which :func:`read_tuned` reads for every later
retrain's plan: they train with them until the next tuning.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from signalops.config import Settings, XGBoostParams
from signalops.config.lifecycle import LOG_SCALE
from signalops.errors import BadInputError
from signalops.files import atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.dataset import Dataset
from signalops.training.rundir import (
    DATASET_META,
    TUNING_JSON,
    StepResult,
    load_dataset,
    read_request,
    read_state,
    save_state,
)
from signalops.training.train import WalkForward, cross_validate

if TYPE_CHECKING:
    from signalops.registry import Registry

log = logging.getLogger(__name__)

MINIMIZED = frozenset({"log_loss", "brier"})  # the other CV figures are maximized


class TuningError(BadInputError):
    """No trial of a study scored a usable CV figure: the data cannot be tuned on."""


# -- what was tuned, and when to tune again ---------------------------------------------


@dataclass(frozen=True)
class TunedParams:
    """A feature set's stored tuning: the searched parameters' best values, and whence."""

    params: dict[str, float]
    tuned_at: datetime
    run_key: str
    mlflow_run_id: str | None
    metric: str
    value: float
    incumbent_value: float
    trials: int

    def describe(self) -> str:
        return f"tuned parameters of run {self.run_key} ({self.tuned_at:%Y-%m-%d %H:%M} UTC)"

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "tuned_at": self.tuned_at.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> TunedParams:
        data = json.loads(text)
        return cls(**{**data, "tuned_at": datetime.fromisoformat(data["tuned_at"])})


def tuned_tag(feature_set_version: str) -> str:
    return f"{c.TUNED_PARAMS_TAG}.{feature_set_version}"


def read_tuned(
    settings: Settings, feature_set_version: str, registry: Registry | None = None
) -> TunedParams | None:
    """The feature set's stored tuned parameters (registered-model tag), if any."""
    from signalops.registry import Registry

    registry = registry or Registry(settings)
    text = registry.model_tag(tuned_tag(feature_set_version))
    if not text:
        return None
    try:
        tuned = TunedParams.from_json(text)
        XGBoostParams.model_validate(tuned.params)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning(
            "ignoring the unreadable tag %s of %s (%s): training.xgboost is used and the "
            "next tuning replaces it",
            tuned_tag(feature_set_version),
            registry.name,
            exc,
        )
        return None
    return tuned


def tuning_plan(
    settings: Settings,
    tuned: TunedParams | None,
    feature_set_version: str,
    trigger: str | None,
    tune_trials: int | None,
    now: datetime | None = None,
) -> tuple[int, str]:
    """(trials, why) of a run: ``tune_trials`` if given, else the schedule of ``tuning``."""
    cfg = settings.tuning
    if tune_trials is not None:
        return tune_trials, f"the run's tune_trials={tune_trials}"
    due = True
    if cfg.trials == 0:
        due, why = False, "tuning.trials is 0 (a run tunes when its tune_trials param asks)"
    elif trigger == "drift" and cfg.on_drift:
        why = "a drift-triggered run (tuning.on_drift)"
    elif cfg.every_days == 0:
        due, why = False, "not on a schedule (tuning.every_days is 0)"
    elif tuned is None:
        why = f"no tuned parameters stored for feature set {feature_set_version}"
    else:
        age = ((now or datetime.now(UTC)) - tuned.tuned_at).total_seconds() / 86400
        due = age >= cfg.every_days
        why = (
            f"the tuned parameters are {age:.1f} days old (tuning.every_days {cfg.every_days:g})"
            if due
            else f"tuned {age:.1f} days ago, next tuning in {cfg.every_days - age:.1f} days"
        )
    return (cfg.trials if due else 0), why


# -- the study --------------------------------------------------------------------------


@dataclass
class StudyResult:
    metric: str
    direction: str  # minimize | maximize
    best: XGBoostParams  # every parameter the train step fits with
    best_values: dict[str, float]  # the searched ones
    best_trial: int
    value: float
    incumbent_value: float  # trial 0: the run's parameters before tuning
    trials: list[dict[str, Any]]  # number, state, params, value, folds, seconds
    seconds: float
    timed_out: bool

    def count(self, state: str) -> int:
        return sum(t["state"] == state for t in self.trials)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "best": self.best.model_dump()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyResult:
        return cls(**{**data, "best": XGBoostParams.model_validate(data["best"])})


class TrialRecorder:
    """What a study reports per trial; the base records nothing (tests, benchmarks)."""

    def start(self, number: int, values: Mapping[str, float]) -> None:
        pass

    def fold(self, number: int, k: int, record: Mapping[str, float], running: float) -> None:
        pass

    def end(self, trial: Mapping[str, Any]) -> None:
        pass


class MlflowTrials(TrialRecorder):
    """Each trial as a nested MLflow run under the retrain's run: params, per-fold metrics
    (step = fold), the trial's state and value."""

    def __init__(self, registry: Registry, parent_run_id: str, run_key: str, metric: str):
        self.registry = registry
        self.parent = parent_run_id
        self.run_key = run_key
        self.metric = metric
        self.runs: dict[int, str] = {}

    def start(self, number: int, values: Mapping[str, float]) -> None:
        run_id = self.registry.start_run(
            run_name=f"trial {number}",
            tags={c.TAG_RUN_KEY: self.run_key, c.TAG_TRIAL: str(number)},
            parent_run_id=self.parent,
        )
        self.registry.log_params(run_id, dict(values))
        self.runs[number] = run_id

    def fold(self, number: int, k: int, record: Mapping[str, float], running: float) -> None:
        self.registry.log_metrics(
            self.runs[number],
            {
                f"cv_{self.metric}": float(record[self.metric]),
                f"cv_running_mean_{self.metric}": running,
                "cv_best_trees": float(record["best_trees"]),
            },
            step=k,
        )

    def end(self, trial: Mapping[str, Any]) -> None:
        run_id = self.runs[trial["number"]]
        metrics = {"seconds": float(trial["seconds"]), "folds_scored": len(trial["folds"])}
        if trial["value"] is not None:
            metrics[f"cv_mean_{self.metric}"] = float(trial["value"])
        self.registry.log_metrics(run_id, metrics)
        # One point per trial on the retrain's run too (step = trial), under names of their
        # own: its cv_mean_* are the train step's.
        self.registry.log_metrics(
            self.parent, {f"tuning_trial_{k}": v for k, v in metrics.items()}, step=trial["number"]
        )
        self.registry.set_tags(run_id, {c.TAG_TRIAL_STATE: trial["state"]})
        self.registry.end_run(run_id, "FAILED" if trial["state"] == "failed" else "FINISHED")


def _suggest(trial: Any, name: str, low: float, high: float) -> float:
    if name == "max_depth":
        return int(trial.suggest_int(name, int(low), int(high)))
    return float(trial.suggest_float(name, low, high, log=name in LOG_SCALE and low > 0))


def run_study(
    data: Dataset | WalkForward,
    settings: Settings,
    incumbent: XGBoostParams,
    trials: int,
    fixed: Iterable[str] = (),
    recorder: TrialRecorder | None = None,
) -> StudyResult:
    """Up to ``trials`` trials (``tuning.timeout_s`` permitting) of the walk-forward CV;
    trial 0 is ``incumbent``; parameters in ``fixed`` are not searched."""
    import optuna

    # Each trial is logged here (and as an MLflow run): Optuna's own lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg, tcfg = settings.training, settings.tuning
    metric = tcfg.metric or settings.evaluation.primary_metric
    direction: Literal["minimize", "maximize"] = "minimize" if metric in MINIMIZED else "maximize"
    recorder = recorder or TrialRecorder()
    started = time.perf_counter()
    wf = data if isinstance(data, WalkForward) else WalkForward(data, cfg, cache=True)
    keep = set(fixed)
    space = {n: r for n, r in tcfg.space.ranges().items() if n not in keep}
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=tcfg.seed),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=tcfg.prune_startup_trials,
            n_warmup_steps=tcfg.prune_after_folds - 1,
        ),
    )
    study.enqueue_trial({n: getattr(incumbent, n) for n in space})
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> float:
        values = {n: _suggest(trial, n, low, high) for n, (low, high) in space.items()}
        params = XGBoostParams.model_validate({**incumbent.model_dump(), **values})
        record: dict[str, Any] = {
            "number": trial.number,
            "state": "failed",
            "params": values,
            "value": None,
            "folds": [],
            "seconds": 0.0,
        }
        records.append(record)
        recorder.start(trial.number, values)
        began = time.perf_counter()

        def on_fold(k: int, fold: dict[str, float]) -> None:
            record["folds"].append(fold)
            running = float(np.mean([f[metric] for f in record["folds"]]))
            recorder.fold(trial.number, k, fold, running)
            trial.report(running, k)
            if k < len(wf.splits) - 1 and trial.should_prune():  # a scored trial completes
                raise optuna.TrialPruned(f"running CV {metric} {running:.4f} after fold {k}")

        try:
            cross_validate(wf, cfg, params, on_fold=on_fold, verbose=False)
            record["state"] = "complete"
            record["value"] = float(np.mean([f[metric] for f in record["folds"]]))
        except optuna.TrialPruned:
            record["state"] = "pruned"
            raise
        finally:
            record["seconds"] = time.perf_counter() - began
            recorder.end(record)
            log.info(
                "trial %d: %s after %d folds, CV %s %s, %.1f s; %s",
                trial.number,
                record["state"],
                len(record["folds"]),
                metric,
                "-" if record["value"] is None else f"{record['value']:.4f}",
                record["seconds"],
                ", ".join(f"{n}={v:.4g}" for n, v in values.items()),
            )
        return float(record["value"])

    study.optimize(objective, n_trials=trials, timeout=tcfg.timeout_s)
    scored = [r for r in records if r["state"] == "complete" and np.isfinite(r["value"])]
    if not scored:
        raise TuningError(
            f"tuning: none of {len(records)} trials scored a finite mean CV {metric} on "
            f"{len(wf.y)} pre-holdout rows (a fold with one class?); states "
            f"{[r['state'] for r in records]}"
        )
    # The first best wins a tie: the incumbent (trial 0) unless a trial beats it.
    sign = 1.0 if direction == "minimize" else -1.0
    best = min(scored, key=lambda r: sign * r["value"])
    return StudyResult(
        metric=metric,
        direction=direction,
        best=XGBoostParams.model_validate({**incumbent.model_dump(), **best["params"]}),
        best_values=dict(best["params"]),
        best_trial=int(best["number"]),
        value=float(best["value"]),
        incumbent_value=float(scored[0]["value"]) if scored[0]["number"] == 0 else float("nan"),
        trials=records,
        seconds=time.perf_counter() - started,
        timed_out=len(records) < trials,
    )


# -- the step ---------------------------------------------------------------------------


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
