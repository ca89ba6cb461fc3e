"""
### Retrain: train, export, evaluate against the champion, register

Runs daily, and whenever the drift monitor emits `signalops/drift_detected`. Trains an
XGBoost direction classifier on point-in-time features and hands a **challenger** to the
registry only if it survives two gates.

* **assemble**: labeled rows of the window (default: the last `training.window_days` up to
  the newest features) from the offline store. Too little data: a warning alert and a
  *skipped* run, not an obscure failure. Data and settings already trained on (same
  snapshot hash): skipped too, unless `force`.
* **tune**: when due, an Optuna study over the XGBoost hyperparameters on the same
  walk-forward CV (never the holdout): the run's parameters are trial 0, TPE with a fixed
  seed, median pruning after the first folds, a time budget, every trial a nested MLflow run.
  Due when `tune_trials` asks, or (with `tuning.trials` > 0) weekly (`tuning.every_days`)
  and on drift-triggered runs (`tuning.on_drift`). The best parameters are stored
  (`best_params.json`, the registered model's tag `signalops.tuned_params.<feature set>`)
  and later retrains train with them until the next tuning. Not due: the task says why.
* **train**: walk-forward CV with a purge gap of H bars (early stopping per fold), then one
  final fit on every pre-holdout row with the median of the folds' tree counts. The newest
  block is an out-of-time holdout, never used for fitting or early stopping.
* **export_parity**: `model.onnx` via onnxmltools; on the whole holdout,
  max |p_onnx - p_xgboost| <= `training.max_parity_error`, identical labels, same tree
  count. A failure fails the run here: nothing is registered.
* **describe**: what the version carries beside its model: SHAP importance (+ plot), the
  drift monitor's reference profile with its null critical values, the feature spec (the
  sidecar's input contract).
* **evaluate**: challenger, current champion and a naive baseline on the same holdout
  (ML and trading metrics), a paired block-bootstrap CI against the champion, absolute
  floors. The markdown report is in this task's log and in MLflow.
* **gate** branches to **register** (MLflow model version with every artifact, alias
  `challenger`, or `champion` for the very first model; emits
  `signalops/challenger_registered`) or **reject** (the MLflow run records why).

Hyperparameters left empty in the form come from the feature set's stored tuned parameters
(if any) over `training.xgboost` in the config; a hyperparameter set in the form is kept
fixed by a tuning study.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

from signalops.assets import CHALLENGER_REGISTERED, DRIFT_DETECTED
from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors
from signalops.features.definitions import FEATURE_SETS

log = logging.getLogger(__name__)

HYPERPARAMETERS = {
    "max_depth": ("integer", "Maximum tree depth."),
    "eta": ("number", "Learning rate."),
    "num_boost_round": ("integer", "Upper bound on trees; early stopping picks fewer."),
    "early_stopping_rounds": ("integer", "Rounds without improvement before a fold stops."),
    "subsample": ("number", "Row share sampled per tree (0..1]."),
    "colsample_bytree": ("number", "Feature share sampled per tree (0..1]."),
    "min_child_weight": ("number", "Minimum hessian sum in a leaf."),
    "reg_lambda": ("number", "L2 regularization."),
    "reg_alpha": ("number", "L1 regularization."),
}


def _run_step(step: str, previous: dict, registered: bool | None = None) -> Any:
    """Run one step of ``signalops.training.retrain`` on the run directory that the previous
    task handed over, log its summary; ``registered`` set: also send the outcome message."""
    from pathlib import Path

    from signalops.alerts.ledger import notify
    from signalops.config import load_settings
    from signalops.training import retrain as steps

    settings = load_settings()
    run_dir = Path(previous["run_dir"])
    with task_errors():
        result = getattr(steps, step)(settings, run_dir)
    if registered is not None:  # once per retrain run, however often this task is retried
        alert = steps.outcome_alert(settings, result, registered)
        notify(alert, settings, kind="retrain", key=run_dir.name, window=timedelta(days=7))
    log.info("%s", result.summary)
    return result


INSUFFICIENT_DATA_WINDOW = timedelta(hours=20)


@dag(
    dag_id="retrain",
    # Daily at 03:00 UTC, and on every high-severity drift event.
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC"), assets=[DRIFT_DETECTED]
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=3,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,
    tags=["signalops", "training", "mlflow"],
    doc_md=__doc__,
    params={
        "window_days": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Training window in days, ending at the newest features. "
            "Empty: training.window_days.",
        ),
        "start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Explicit window start (UTC); overrides window_days.",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Explicit window end (UTC, exclusive). Empty: the newest features.",
        ),
        "symbols": Param(
            None,
            type=["null", "array"],
            items={"type": "string"},
            description="Symbols to train on. Empty: every configured symbol.",
        ),
        "feature_set_version": Param(
            None,
            type=["null", "string"],
            enum=[None, *sorted(FEATURE_SETS)],
            description="Feature-set version. Empty: the configured one.",
        ),
        "force": Param(
            False,
            type="boolean",
            description="Retrain even if a registered version saw this exact data and settings.",
        ),
        "tune_trials": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="Optuna trials to tune the hyperparameters in this run (0: no tuning). "
            "Empty: the tuning schedule (tuning.trials when due: weekly, on drift).",
        ),
        **{
            name: Param(
                None,
                type=["null", kind],
                description=f"XGBoost: {text} Empty: the stored tuned value, else config.",
            )
            for name, (kind, text) in HYPERPARAMETERS.items()
        },
    },
)
def retrain() -> None:
    @task
    def assemble(params: Any = None, run_id: Any = None, dag_run: Any = None) -> dict:
        """Resolve the window and settings, assemble the labeled dataset, open the MLflow run."""
        from airflow.sdk.exceptions import AirflowSkipException

        from signalops.alerts.ledger import notify
        from signalops.config import load_settings
        from signalops.training import retrain as steps
        from signalops.training.dataset import InsufficientDataError

        settings = load_settings()
        overrides = {k: params[k] for k in HYPERPARAMETERS if params.get(k) is not None}
        # The schedule's only Asset is signalops/drift_detected.
        run_type = getattr(dag_run, "run_type", None)
        trigger = "drift" if getattr(run_type, "value", run_type) == "asset_triggered" else None
        with task_errors():
            try:
                request = steps.plan_request(
                    settings,
                    {**params, "hyperparameters": overrides, "trigger": trigger},
                    run_key=run_id,
                )
                run_dir = steps.write_request(settings, request)
                result = steps.assemble(settings, run_dir)
            except InsufficientDataError as exc:
                # once a day per signal, not once per drift-triggered run
                notify(
                    exc.alert,
                    settings,
                    kind="insufficient_data",
                    key=settings.signal_name,
                    window=INSUFFICIENT_DATA_WINDOW,
                )
                raise AirflowSkipException(str(exc)) from None
            except steps.AlreadyTrained as exc:
                raise AirflowSkipException(str(exc)) from None
        log.info("%s", result.summary)
        return result.as_dict()

    @task
    def tune(assembled: dict) -> dict:
        """When due: Optuna study on the walk-forward CV, best parameters stored."""
        from airflow.sdk.exceptions import AirflowSkipException

        from signalops.training.retrain import AlreadyTrained

        try:
            return _run_step("tune", assembled).as_dict()
        except AlreadyTrained as exc:  # the tuned parameters were trained on this data
            raise AirflowSkipException(str(exc)) from None

    @task
    def train(tuned: dict) -> dict:
        """Walk-forward CV with purge, early stopping, final fit."""
        return _run_step("train", tuned).as_dict()

    @task
    def export_parity(trained: dict) -> dict:
        """ONNX export and the parity gate on the whole holdout."""
        return _run_step("export", trained).as_dict()

    @task
    def describe(exported: dict) -> dict:
        """SHAP importance, the drift reference profile and the feature spec (contract)."""
        return _run_step("describe", exported).as_dict()

    @task
    def evaluate(described: dict) -> dict:
        """Challenger vs champion vs naive baseline on the holdout; the report."""
        return _run_step("evaluate", described).as_dict()

    @task.branch
    def gate(evaluated: dict) -> str:
        """Register what passed the evaluation gate; close the run of what did not."""
        return "register" if evaluated["figures"]["passed"] else "reject"

    @task(outlets=[CHALLENGER_REGISTERED])
    def register(evaluated: dict, outlet_events: Any = None) -> dict:
        """New model version with every artifact; alias challenger (champion if first)."""
        from signalops.config import load_settings

        result = _run_step("register", evaluated, registered=True)
        outlet_events[CHALLENGER_REGISTERED].extra = {
            "signal": load_settings().signal_name,
            **result.figures,
            "mlflow_run_id": result.mlflow_run_id,
        }
        return result.as_dict()

    @task
    def reject(evaluated: dict) -> dict:
        """The gate said no: record why in MLflow, tell the team, register nothing."""
        return _run_step("reject", evaluated, registered=False).as_dict()

    evaluated = evaluate(describe(export_parity(train(tune(assemble())))))
    gate(evaluated) >> [register(evaluated), reject(evaluated)]


retrain()
