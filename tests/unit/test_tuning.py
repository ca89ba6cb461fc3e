"""Hyperparameter tuning (training.tune) on a tiny in-memory dataset, without MLflow.

The study scores the same walk-forward CV the train step reports, starts from the run's own
parameters (so it is never worse on that figure), is repeatable under its seed, prunes, and
never looks at the holdout. When a run tunes is a pure function of settings and the stored
tuning (tested case by case).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signalops.config import ConfigError, Settings, XGBoostParams
from signalops.training.dataset import Dataset, holdout_split
from signalops.training.fit import cv_mean
from signalops.training.study import StudyResult, TrialRecorder, run_study
from signalops.training.train import WalkForward, cross_validate, train_model
from signalops.training.tuned import TunedParams, read_tuned, tuned_tag, tuning_plan
from tests.conftest import make_settings

FEATURES = ["f0", "f1", "f2", "f3"]


def tiny_dataset(bars: int = 1500, seed: int = 3) -> Dataset:
    """Two symbols of 5-minute bars whose label depends on the features (and noise)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2026-01-01", periods=bars, freq="5min", tz="UTC")
    parts = []
    for symbol in ("AAA", "BBB"):
        x = rng.normal(size=(bars, len(FEATURES)))
        logit = 0.9 * x[:, 0] - 0.6 * x[:, 1] * x[:, 2] + 0.3 * np.abs(x[:, 3])
        up = (rng.random(bars) < 1 / (1 + np.exp(-logit))).astype(np.float64)
        parts.append(
            pd.DataFrame(
                {
                    "symbol": symbol,
                    "ts": ts,
                    **{name: x[:, i] for i, name in enumerate(FEATURES)},
                    "label_return": np.where(up == 1, 0.001, -0.001),
                    "label_up": up,
                }
            )
        )
    frame = pd.concat(parts).sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    return Dataset(frame, FEATURES, "v1", 1, timedelta(minutes=5), "tiny")


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    """Small boosting budgets, so a study of several trials takes about a second (one
    XGBoost thread: two threads on a busy 2-core machine are ten times slower)."""
    return make_settings(
        tmp_path,
        SIGNALOPS_TRAINING__NTHREAD="1",
        SIGNALOPS_TRAINING__XGBOOST__NUM_BOOST_ROUND="60",
        SIGNALOPS_TRAINING__XGBOOST__EARLY_STOPPING_ROUNDS="8",
    )


class Recorder(TrialRecorder):
    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[str] = []
        self.folds = 0

    def start(self, number: int, values: object) -> None:
        self.started.append(number)

    def fold(self, number: int, k: int, record: object, running: float) -> None:
        self.folds += 1

    def end(self, trial: dict) -> None:  # type: ignore[override]
        self.ended.append(trial["state"])


def _figures(result: StudyResult) -> list[tuple]:
    return [(t["number"], t["state"], t["params"], t["value"], t["folds"]) for t in result.trials]


def test_the_study_scores_the_training_cv_and_never_loses_to_the_defaults(fast: Settings) -> None:
    ds = tiny_dataset()
    defaults = fast.training.xgboost
    recorder = Recorder()
    result = run_study(ds, fast, defaults, trials=10, recorder=recorder)

    # Trial 0 is the run's own parameters, scored exactly as the train step scores them.
    trained = train_model(ds, fast.training, defaults)
    metric = fast.evaluation.primary_metric
    assert result.metric == metric == "roc_auc" and result.direction == "maximize"
    assert result.trials[0]["params"] == {
        n: getattr(defaults, n) for n in fast.tuning.space.ranges()
    }
    assert result.trials[0]["folds"] == trained.folds
    assert result.incumbent_value == cv_mean(trained.folds)[metric]
    # So the best is never worse than the defaults (on this data they are hard to beat:
    # a tie keeps trial 0).
    assert result.value >= result.incumbent_value
    complete = [t["value"] for t in result.trials if t["state"] == "complete"]
    assert result.value == max(complete) and len(complete) >= 3

    # Pruning: bad trials stop after their first folds; every trial was reported.
    assert result.count("pruned") >= 1
    pruned = [t for t in result.trials if t["state"] == "pruned"]
    assert all(len(t["folds"]) < fast.training.cv_folds for t in pruned)
    assert recorder.started == list(range(10)) and len(recorder.ended) == 10
    assert recorder.ended == [t["state"] for t in result.trials]
    assert recorder.folds == sum(len(t["folds"]) for t in result.trials)
    assert not result.timed_out

    # A weak starting point: the search beats it, and the best trial's parameters reproduce
    # its figure through the ordinary training path.
    weak = defaults.model_copy(update={"max_depth": 2, "eta": 0.01, "min_child_weight": 50.0})
    better = run_study(ds, fast, weak, trials=10)
    assert better.best_trial != 0 and better.value > better.incumbent_value
    retrained = train_model(ds, fast.training, better.best)
    assert cv_mean(retrained.folds)[metric] == better.value
    assert better.best.num_boost_round == 60  # not searched: kept from the run


def test_the_study_is_repeatable_under_its_seed(fast: Settings) -> None:
    ds = tiny_dataset()
    a = run_study(ds, fast, fast.training.xgboost, trials=6)
    b = run_study(tiny_dataset(), fast, fast.training.xgboost, trials=6)
    assert a.best_values == b.best_values and a.best_trial == b.best_trial
    assert _figures(a) == _figures(b)
    other_seed = fast.model_copy(update={"tuning": fast.tuning.model_copy(update={"seed": 7})})
    c = run_study(ds, other_seed, fast.training.xgboost, trials=6)
    assert [t["params"] for t in c.trials[1:]] != [t["params"] for t in a.trials[1:]]


def test_the_study_never_sees_the_holdout(fast: Settings) -> None:
    """Garbage in every holdout row (features and labels) and in the labels of the purge gap:
    the same trials, the same figures, the same best parameters."""
    ds = tiny_dataset()
    split = holdout_split(ds.ts, fast.training.holdout_fraction, ds.label_end)
    cut = ds.ts[split.valid].min()
    tampered = ds.frame.copy()
    rows = tampered.index[split.valid]
    rng = np.random.default_rng(99)
    tampered.loc[rows, FEATURES] = rng.normal(1e3, 1e3, size=(len(rows), len(FEATURES)))
    tampered.loc[rows, "label_up"] = 1.0 - tampered.loc[rows, "label_up"]
    gap = tampered.index[(ds.label_end >= cut) & (ds.ts < cut)]
    assert len(gap) > 0
    tampered.loc[gap, "label_up"] = 1.0 - tampered.loc[gap, "label_up"]
    garbage = Dataset(tampered, FEATURES, "v1", 1, ds.bar, "garbage")

    clean = run_study(ds, fast, fast.training.xgboost, trials=6)
    dirty = run_study(garbage, fast, fast.training.xgboost, trials=6)
    assert _figures(clean) == _figures(dirty)
    assert clean.best_values == dirty.best_values and clean.value == dirty.value


def test_fixed_parameters_are_not_searched_and_the_space_bounds_hold(fast: Settings) -> None:
    ds = tiny_dataset(bars=900)
    incumbent = fast.training.xgboost.model_copy(update={"max_depth": 3})
    result = run_study(ds, fast, incumbent, trials=4, fixed=["max_depth", "eta"])
    space = fast.tuning.space.ranges()
    for trial in result.trials:
        assert set(trial["params"]) == set(space) - {"max_depth", "eta"}
        for name, value in trial["params"].items():
            assert space[name][0] <= value <= space[name][1] or trial["number"] == 0
    assert result.best.max_depth == 3 and result.best.eta == fast.training.xgboost.eta


def test_the_time_budget_stops_the_study_after_the_running_trial(fast: Settings) -> None:
    hurried = fast.model_copy(update={"tuning": fast.tuning.model_copy(update={"timeout_s": 1e-3})})
    result = run_study(tiny_dataset(bars=900), hurried, fast.training.xgboost, trials=50)
    assert len(result.trials) == 1 and result.timed_out  # trial 0 always runs to the end
    assert result.best_trial == 0 and result.value == result.incumbent_value


def test_cached_folds_score_like_fresh_ones(fast: Settings) -> None:
    ds = tiny_dataset(bars=900)
    cfg, params = fast.training, fast.training.xgboost
    fresh = cross_validate(ds, cfg, params)
    cached = WalkForward(ds, cfg, cache=True)
    assert cross_validate(cached, cfg, params).folds == fresh.folds
    assert cross_validate(cached, cfg, params).folds == fresh.folds  # matrices reused
    assert np.array_equal(cached.holdout.valid, fresh.holdout.valid)

    seen: list[int] = []

    class Stop(Exception):
        pass

    def stop_after_two(k: int, record: dict) -> None:
        seen.append(k)
        if k == 1:
            raise Stop

    with pytest.raises(Stop):
        cross_validate(cached, cfg, params, on_fold=stop_after_two)
    assert seen == [0, 1]


# -- when to tune -----------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)


def _tuned(days_ago: float) -> TunedParams:
    return TunedParams(
        params={"max_depth": 5, "eta": 0.1},
        tuned_at=NOW - timedelta(days=days_ago),
        run_key="scheduled__2026-02-20",
        mlflow_run_id="abc",
        metric="roc_auc",
        value=0.56,
        incumbent_value=0.55,
        trials=20,
    )


def _with(settings: Settings, **tuning: object) -> Settings:
    return settings.model_copy(update={"tuning": settings.tuning.model_copy(update=tuning)})


@pytest.mark.parametrize(
    ("tuning", "tuned_days_ago", "trigger", "tune_trials", "trials", "why"),
    [
        # Off by default: only a run's tune_trials tunes.
        ({}, None, None, None, 0, "tuning.trials is 0"),
        ({}, None, "drift", None, 0, "tuning.trials is 0"),
        ({}, 30.0, None, 5, 5, "the run's tune_trials=5"),
        # With tuning.trials set: the weekly schedule and drift.
        ({"trials": 20}, None, None, None, 20, "no tuned parameters stored for feature set v1"),
        ({"trials": 20}, 2.0, None, None, 0, "tuned 2.0 days ago, next tuning in 5.0 days"),
        ({"trials": 20}, 7.5, None, None, 20, "the tuned parameters are 7.5 days old"),
        ({"trials": 20}, 2.0, "drift", None, 20, "a drift-triggered run (tuning.on_drift)"),
        ({"trials": 20, "on_drift": False}, 2.0, "drift", None, 0, "next tuning in 5.0 days"),
        ({"trials": 20, "every_days": 0.0}, None, None, None, 0, "not on a schedule"),
        ({"trials": 20, "every_days": 0.0}, None, "drift", None, 20, "drift-triggered"),
        # The run's param wins both ways.
        ({"trials": 20}, None, "drift", 0, 0, "the run's tune_trials=0"),
        ({"trials": 20}, 1.0, None, 3, 3, "the run's tune_trials=3"),
    ],
)
def test_when_a_run_tunes(
    settings: Settings,
    tuning: dict,
    tuned_days_ago: float | None,
    trigger: str | None,
    tune_trials: int | None,
    trials: int,
    why: str,
) -> None:
    tuned = None if tuned_days_ago is None else _tuned(tuned_days_ago)
    got, reason = tuning_plan(_with(settings, **tuning), tuned, "v1", trigger, tune_trials, NOW)
    assert got == trials and why in reason


class FakeRegistry:
    name = "direction_1h"

    def __init__(self, tags: dict[str, str]):
        self.tags = tags

    def model_tag(self, key: str) -> str | None:
        return self.tags.get(key)


def test_stored_tuning_reads_back_and_garbage_is_ignored(settings: Settings) -> None:
    stored = _tuned(1.0)
    registry = FakeRegistry({tuned_tag("v1"): stored.as_json(), tuned_tag("v2"): "{not json"})
    assert read_tuned(settings, "v1", registry) == stored  # type: ignore[arg-type]
    assert read_tuned(settings, "v2", registry) is None  # type: ignore[arg-type]
    assert read_tuned(settings, "d1", registry) is None  # type: ignore[arg-type]
    bad = TunedParams(**{**stored.__dict__, "params": {"max_depth": 99}})
    registry.tags[tuned_tag("v1")] = bad.as_json()
    assert read_tuned(settings, "v1", registry) is None  # type: ignore[arg-type]
    assert "v1" in stored.describe() or "scheduled__2026-02-20" in stored.describe()


def test_the_search_space_is_checked_at_load(tmp_path: Path) -> None:
    ok = make_settings(tmp_path, SIGNALOPS_TUNING__SPACE__ETA="0.02,0.2")
    assert ok.tuning.space.eta == (0.02, 0.2) and ok.tuning.trials == 0
    with pytest.raises(ConfigError, match=r"tuning.space.max_depth: low 6 is above high 3"):
        make_settings(tmp_path, SIGNALOPS_TUNING__SPACE__MAX_DEPTH="6,3")
    with pytest.raises(ConfigError, match=r"not a valid training.xgboost.subsample"):
        make_settings(tmp_path, SIGNALOPS_TUNING__SPACE__SUBSAMPLE="0,1")
    # Every default bound is a valid hyperparameter.
    for name, (low, high) in ok.tuning.space.ranges().items():
        XGBoostParams.model_validate({name: low})
        XGBoostParams.model_validate({name: high})
