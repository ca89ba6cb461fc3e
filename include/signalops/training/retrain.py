"""The retrain path, one function per task of the ``retrain`` DAG.

plan -> assemble -> tune (Optuna study, when due) -> train (walk-forward CV + final fit) ->
export (ONNX + parity gate) -> describe (SHAP, reference profile, feature spec) -> evaluate
(challenger vs champion vs naive baseline, the gate) -> register | reject.

Steps hand over files in one run directory (``<state>/retrain/<run key>/``) and return
small dicts (paths, ids, figures) for XCom. Each step can be retried: it rewrites its own
files and reuses the MLflow run and model version it already created. All MLflow access
goes through :mod:`signalops.registry`.

This module is the entry point (the DAG, the CLI and the benchmarks call the steps by
name through it, and :func:`run_all` runs them in one process); each step lives in its own
module of :mod:`signalops.training`:

- :mod:`~signalops.training.plan`: the run's window, symbols and hyperparameters;
- :mod:`~signalops.training.rundir`: the run directory's files and state;
- :mod:`~signalops.training.assemble`: the labeled dataset, the MLflow run, dedupe;
- :mod:`~signalops.training.tune`: the hyperparameter study (when due) and its stored best;
- :mod:`~signalops.training.fit`: the ``train`` step (fitting is in ``train.train_model``);
- :mod:`~signalops.training.export`: ONNX export and the parity gate;
- :mod:`~signalops.training.describe`: SHAP, the drift reference profile, the feature spec;
- :mod:`~signalops.training.evaluate`: the holdout report and the gate's decision;
- :mod:`~signalops.training.register`: register or reject, and the outcome's Slack message.
"""

from __future__ import annotations

import time
from typing import Any

from signalops.config import Settings
from signalops.training.assemble import AlreadyTrained, assemble
from signalops.training.describe import describe
from signalops.training.evaluate import evaluate
from signalops.training.export import export
from signalops.training.fit import train
from signalops.training.plan import RetrainRequest, plan_request
from signalops.training.register import outcome_alert, register, reject
from signalops.training.rundir import StepResult, write_request
from signalops.training.tune import tune

__all__ = [
    "AlreadyTrained",
    "RetrainRequest",
    "StepResult",
    "assemble",
    "describe",
    "evaluate",
    "export",
    "outcome_alert",
    "plan_request",
    "register",
    "reject",
    "run_all",
    "train",
    "tune",
    "write_request",
]


def run_all(
    settings: Settings, request: RetrainRequest, timings: dict[str, float] | None = None
) -> dict[str, StepResult]:
    """Every step in order, in this process (the CLI and the benchmark use it)."""
    run_dir = write_request(settings, request)
    results: dict[str, StepResult] = {}
    timings = {} if timings is None else timings

    def run(name: str, step: Any) -> StepResult:
        started = time.perf_counter()
        results[name] = step(settings, run_dir)
        timings[name] = time.perf_counter() - started
        return results[name]

    for name, step in (
        ("assemble", assemble),
        ("tune", tune),
        ("train", train),
        ("export", export),
        ("describe", describe),
    ):
        run(name, step)
    if run("evaluate", evaluate).figures["passed"]:
        run("register", register)
    else:
        run("reject", reject)
    return results
