"""Tuning in the retrain path, against a real MLflow (SQLite store + local artifacts).

A run asked to tune (tune_trials) runs its study as nested MLflow runs under its own run,
trains and registers with the best parameters, and stores them: the version carries
``best_params.json``, the registered model the tag the next retrains read. The figures it
stores are the train step's own CV figures, and the study starts from the parameters the
run would otherwise have used. A later retrain trains with the stored parameters without
tuning again, and on the same data it is the same model (skipped).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from signalops.config import Settings
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.training import retrain as steps
from signalops.training import rundir
from signalops.training.tuned import read_tuned, tuned_tag
from tests.conftest import copy_lake

pytestmark = pytest.mark.integration

TRIALS = 5


@pytest.fixture
def settings(training_lake: Path, tmp_path: Path) -> Settings:
    # Small boosting budgets and one thread: the study's trials take a fraction of a second.
    return copy_lake(
        training_lake,
        tmp_path,
        SIGNALOPS_TRAINING__NTHREAD="1",
        SIGNALOPS_TRAINING__XGBOOST__NUM_BOOST_ROUND="80",
        SIGNALOPS_TRAINING__XGBOOST__EARLY_STOPPING_ROUNDS="10",
        SIGNALOPS_TUNING__PRUNE_STARTUP_TRIALS="2",
    )


def test_a_tuned_retrain_logs_trials_registers_and_stores_its_best(settings: Settings) -> None:
    registry = Registry(settings)

    # The untuned figure first: the train step's mean CV AUC with the configured parameters.
    plain = steps.plan_request(settings, {}, run_key="plain")
    assert plain.tune_trials == 0 and "tuning.trials is 0" in plain.tune_reason
    plain_dir = steps.write_request(settings, plain)
    steps.assemble(settings, plain_dir)
    skipped = steps.tune(settings, plain_dir)
    assert skipped.figures == {"tuned": False, "reason": plain.tune_reason}
    assert "no tuning" in skipped.summary and "training.xgboost" in skipped.summary
    steps.train(settings, plain_dir)
    plain_cv = json.loads((plain_dir / rundir.TRAIN_JSON).read_text())["cv_mean"]["roc_auc"]

    # The tuned run, through every step.
    request = steps.plan_request(settings, {"tune_trials": TRIALS}, run_key="tuned")
    assert request.tune_trials == TRIALS and "tune_trials=5" in request.tune_reason
    results = steps.run_all(settings, request)
    assert "register" in results, results["evaluate"].summary
    tuned = results["tune"].figures
    run_dir = Path(results["tune"].run_dir)
    best = json.loads((run_dir / c.BEST_PARAMS).read_text())
    trained = json.loads((run_dir / rundir.TRAIN_JSON).read_text())

    # Trial 0 is what the run would have trained with, scored as the train step scores it;
    # the best is at least as good, and the model trained with it reports that very figure.
    assert best["metric"] == "roc_auc" and best["trials"] == TRIALS
    assert best["incumbent_value"] == pytest.approx(plain_cv, abs=1e-12)
    assert best["value"] >= best["incumbent_value"]
    assert trained["cv_mean"]["roc_auc"] == pytest.approx(best["value"], abs=1e-12)
    assert tuned["value"] == best["value"] and tuned["params"] == best["tuned"]
    assert {k: trained["params"][k] for k in ("max_depth", "eta")} == {
        "max_depth": best["params"]["max_depth"],
        "eta": best["params"]["eta"],
    }

    # Every trial is a nested run of the retrain's run, with its state and figures.
    parent = results["tune"].mlflow_run_id
    assert parent is not None
    children = registry.child_runs(parent)
    assert len(children) == TRIALS
    record = json.loads((run_dir / rundir.TUNING_JSON).read_text())["study"]
    assert sorted(int(r.data.tags[c.TAG_TRIAL]) for r in children) == list(range(TRIALS))
    states = {int(r.data.tags[c.TAG_TRIAL]): r.data.tags[c.TAG_TRIAL_STATE] for r in children}
    assert states == {t["number"]: t["state"] for t in record["trials"]}
    assert all(r.info.status == "FINISHED" for r in children)
    first = next(r for r in children if r.data.tags[c.TAG_TRIAL] == "0")
    assert first.data.metrics["cv_mean_roc_auc"] == pytest.approx(best["incumbent_value"])
    assert set(first.data.params) == set(settings.tuning.space.ranges())
    history = registry.client.get_metric_history(first.info.run_id, "cv_roc_auc")
    assert sorted(m.step for m in history) == list(range(settings.training.cv_folds))
    run = registry.client.get_run(parent)
    assert run.data.params["tuned.max_depth"] == str(best["tuned"]["max_depth"])
    assert run.data.metrics["tuning_best_roc_auc"] == pytest.approx(best["value"])
    assert run.data.metrics["cv_mean_roc_auc"] == pytest.approx(best["value"])  # train's own
    per_trial = registry.client.get_metric_history(parent, "tuning_trial_seconds")
    assert sorted(m.step for m in per_trial) == list(range(TRIALS))
    assert run.data.tags[c.TAG_PARAMS_SOURCE].startswith("tuned in this run")

    # The version carries the parameters it was trained with, and says where they came from.
    version = results["register"].figures["version"]
    info = registry.version(version)
    assert info.tags[c.TAG_PARAMS_SOURCE].startswith("tuned in this run")
    assert (
        info.tags[c.TAG_TRAINING_KEY]
        == json.loads((run_dir / rundir.STATE).read_text())["training_key"]
    )
    with_version = json.loads(
        registry.download_file(version, c.BEST_PARAMS, run_dir.parent / "dl").read_text()
    )
    assert with_version == best

    # Stored for the feature set: the next retrains train with it, without tuning again.
    stored = read_tuned(settings, "v1")
    assert stored is not None and stored.params == best["tuned"]
    assert stored.run_key == "tuned" and stored.mlflow_run_id == parent
    assert registry.model_tag(tuned_tag("v2")) is None
    later = steps.plan_request(settings, {}, run_key="later")
    assert later.tune_trials == 0
    assert later.params.model_dump() == best["params"]
    assert "tuned parameters of run tuned" in later.params_source
    # Same data, same (stored) parameters: the model the tuned run registered. Nothing new.
    with pytest.raises(steps.AlreadyTrained, match=f"version {version} was already trained"):
        steps.run_all(settings, later)
    # Tuning again on the same data: trial 0 is now the stored best and the seeded sampler
    # proposes the same others, so the same best, and nothing new after the study.
    redo = steps.plan_request(settings, {"tune_trials": TRIALS}, run_key="redo")
    with pytest.raises(steps.AlreadyTrained, match=f"version {version} was already trained"):
        steps.run_all(settings, redo)
    redo_state = json.loads((rundir.run_directory(settings, "redo") / rundir.STATE).read_text())
    redone = registry.client.get_run(redo_state["mlflow_run_id"])
    assert redone.info.status == "FINISHED"
    assert redone.data.tags[c.TAG_STATUS_REASON].startswith("tuned, then skipped")
    assert len(registry.child_runs(redone.info.run_id)) == TRIALS

    # A run's own hyperparameter wins over the stored one, and a study would keep it fixed.
    own = steps.plan_request(
        settings, {"hyperparameters": {"max_depth": 3}, "tune_trials": 2}, run_key="own"
    )
    assert own.params.max_depth == 3 and own.params.eta == best["params"]["eta"]
    assert own.fixed == ["max_depth"] and own.params_source.startswith("run params (max_depth)")

    # A retried tune task keeps its study (no second set of trials); a killed attempt's
    # trials still RUNNING are closed as failed.
    retry = steps.plan_request(settings, {"tune_trials": 2, "force": True}, run_key="retry")
    retry_dir = steps.write_request(settings, retry)
    steps.assemble(settings, retry_dir)
    once = steps.tune(settings, retry_dir)
    assert once.mlflow_run_id is not None
    orphan = registry.start_run("trial 9", {c.TAG_TRIAL: "9"}, parent_run_id=once.mlflow_run_id)
    (retry_dir / rundir.TUNING_JSON).unlink()  # as if the attempt died before writing it
    again = steps.tune(settings, retry_dir)
    assert again.figures == once.figures
    closed = {r.info.run_id: r for r in registry.child_runs(once.mlflow_run_id)}
    assert len(closed) == 5 and closed[orphan].info.status == "FAILED"
    assert steps.tune(settings, retry_dir).figures == once.figures
    assert len(registry.child_runs(once.mlflow_run_id)) == 5

    # The schedule: on with tuning.trials, a week after the stored tuning, or on drift.
    scheduled = settings.model_copy(
        update={"tuning": settings.tuning.model_copy(update={"trials": 7})}
    )
    fresh = steps.plan_request(scheduled, {}, run_key="fresh")
    assert fresh.tune_trials == 0 and "next tuning in" in fresh.tune_reason
    stale = steps.plan_request(
        scheduled, {}, run_key="stale", now=stored.tuned_at + timedelta(days=8)
    )
    assert stale.tune_trials == 7 and "8.0 days old" in stale.tune_reason
    drift = steps.plan_request(scheduled, {"trigger": "drift"}, run_key="drift")
    assert drift.tune_trials == 7 and "drift" in drift.tune_reason
    off = settings.model_copy(
        update={"tuning": settings.tuning.model_copy(update={"use_tuned": False})}
    )
    assert steps.plan_request(off, {}, run_key="off").params == settings.training.xgboost
    # ... while the stored tuning's age still drives the schedule.
    off_scheduled = off.model_copy(update={"tuning": off.tuning.model_copy(update={"trials": 7})})
    assert steps.plan_request(off_scheduled, {}, run_key="off2").tune_trials == 0
