"""The Optuna study of the ``tune`` step: TPE (seeded) over ``tuning.space``, the run's own
parameters as trial 0, the median pruner between walk-forward folds, a time budget, and every
trial recorded (``MlflowTrials``: a nested MLflow run each)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from signalops.config import Settings, XGBoostParams
from signalops.config.lifecycle import LOG_SCALE
from signalops.errors import BadInputError
from signalops.registry import contracts as c
from signalops.training.dataset import Dataset
from signalops.training.train import WalkForward, cross_validate

if TYPE_CHECKING:
    from signalops.registry import Registry

log = logging.getLogger(__name__)


MINIMIZED = frozenset({"log_loss", "brier"})  # the other CV figures are maximized


class TuningError(BadInputError):
    """No trial of a study scored a usable CV figure: the data cannot be tuned on."""


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
