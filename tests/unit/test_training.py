"""Training on point-in-time data: determinism, no leakage, too little data, ONNX parity."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from signalops.config import Settings
from signalops.training.dataset import (
    Dataset,
    InsufficientDataError,
    assemble_dataset,
    holdout_split,
)
from signalops.training.onnx_export import ParityError, check_parity, export_onnx
from signalops.training.train import train_model
from tests.conftest import TRAIN_END, TRAIN_START, copy_lake


@pytest.fixture
def lake_settings(training_lake: Path, tmp_path: Path) -> Settings:
    return copy_lake(training_lake, tmp_path)


def test_dataset_is_point_in_time_and_hashed(lake_settings: Settings) -> None:
    ds = assemble_dataset(lake_settings, TRAIN_START, TRAIN_END)
    assert len(ds.frame) > 5000 and ds.frame["label_up"].notna().all()
    assert ds.feature_names == [
        c for c in ds.frame.columns if c not in {"symbol", "ts", "label_return", "label_up"}
    ]
    # Labels are the sign of the forward return: the label is never a feature.
    assert ((ds.frame["label_return"] > 0) == (ds.frame["label_up"] == 1)).all()
    again = assemble_dataset(lake_settings, TRAIN_START, TRAIN_END)
    assert again.snapshot_hash == ds.snapshot_hash
    shorter = assemble_dataset(lake_settings, TRAIN_START, TRAIN_END - np.timedelta64(1, "D"))
    assert shorter.snapshot_hash != ds.snapshot_hash


def test_too_little_data_is_refused_with_an_alert(lake_settings: Settings) -> None:
    strict = lake_settings.model_copy(
        update={"training": lake_settings.training.model_copy(update={"min_rows": 10**7})}
    )
    with pytest.raises(InsufficientDataError) as caught:
        assemble_dataset(strict, TRAIN_START, TRAIN_END)
    exc = caught.value
    assert "refusing to train" in str(exc) and "minimum is 10000000" in str(exc)
    assert exc.alert.severity == "warning" and exc.alert.fields["minimum"] == "10000000"
    assert "training.min_rows" in exc.alert.text
    # An empty window is the same refusal, not a crash.
    with pytest.raises(InsufficientDataError, match="0 labeled rows"):
        assemble_dataset(lake_settings, TRAIN_END, TRAIN_END + np.timedelta64(3, "D"))


def test_no_features_at_all_is_the_same_refusal(settings: Settings) -> None:
    """A new deployment: the daily retrain comes before the first features run. The DAG
    skips it with the alert instead of failing."""
    from signalops.training.retrain import plan_request

    with pytest.raises(InsufficientDataError, match="0 labeled rows in the offline store"):
        plan_request(settings, {}, run_key="first")


def test_training_is_deterministic(lake_settings: Settings) -> None:
    ds = assemble_dataset(lake_settings, TRAIN_START, TRAIN_END)
    cfg, params = lake_settings.training, lake_settings.training.xgboost
    a, b = train_model(ds, cfg, params), train_model(ds, cfg, params)
    assert bytes(a.booster.save_raw("ubj")) == bytes(b.booster.save_raw("ubj"))
    assert a.folds == b.folds and a.n_trees == b.n_trees
    assert a.n_trees == a.booster.num_boosted_rounds()


def test_holdout_labels_never_reach_training(lake_settings: Settings) -> None:
    """Rewrite every holdout label (and feature): the trained model must not change at all."""
    ds = assemble_dataset(lake_settings, TRAIN_START, TRAIN_END)
    cfg, params = lake_settings.training, lake_settings.training.xgboost
    split = holdout_split(ds.ts, cfg.holdout_fraction, ds.label_end)
    # The purge gap: no training row's label window reaches the holdout.
    assert (ds.label_end[split.train] < ds.ts[split.valid].min()).all()
    tampered = ds.frame.copy()
    rows = tampered.index[split.valid]
    tampered.loc[rows, "label_up"] = 1.0 - tampered.loc[rows, "label_up"]
    tampered.loc[rows, ds.feature_names] = 0.0
    # Rows in the purge gap carry labels that look into the holdout: tamper them too.
    gap = tampered.index[
        (ds.label_end >= ds.ts[split.valid].min()) & (ds.ts < ds.ts[split.valid].min())
    ]
    assert len(gap) > 0
    tampered.loc[gap, "label_up"] = 1.0 - tampered.loc[gap, "label_up"]
    clean = train_model(ds, cfg, params)
    other = train_model(
        type(ds)(tampered, ds.feature_names, ds.feature_set_version, ds.horizon_bars, ds.bar, "x"),
        cfg,
        params,
    )
    assert bytes(clean.booster.save_raw("ubj")) == bytes(other.booster.save_raw("ubj"))


def test_onnx_export_parity_and_its_failures(lake_settings: Settings, tmp_path: Path) -> None:
    ds = assemble_dataset(lake_settings, TRAIN_START, TRAIN_END)
    result = train_model(ds, lake_settings.training, lake_settings.training.xgboost)
    holdout = ds.x[result.holdout.valid]
    model = export_onnx(result.booster, holdout.shape[1], tmp_path / "model.onnx")
    report, p_native, p_onnx = check_parity(result.booster, model, holdout, 1e-5)
    assert report.passed and report.rows == len(holdout)
    assert report.max_abs_error <= 1e-5 and report.label_mismatches == 0
    assert report.onnx_trees == report.booster_trees == result.n_trees
    assert np.array_equal(p_native > 0.5, p_onnx > 0.5)

    # A tolerance the float32 graph cannot meet: parity fails and says by how much.
    strict, _, _ = check_parity(result.booster, model, holdout, 1e-12)
    assert not strict.passed and "max |p_onnx - p_xgboost|" in strict.failures[0]
    with pytest.raises(ParityError, match="ONNX parity failed, model not registered"):
        raise ParityError(strict)

    # An ONNX graph exported from fewer trees than the booster keeps.
    assert result.n_trees > 1
    fewer = export_onnx(
        result.booster[: result.n_trees - 1], holdout.shape[1], tmp_path / "fewer.onnx"
    )
    short, _, _ = check_parity(result.booster, fewer, holdout, 1e-5)
    assert any("trees" in f for f in short.failures)


def test_onnx_export_refuses_named_features(lake_settings: Settings, tmp_path: Path) -> None:
    import xgboost as xgb

    from signalops.errors import BadInputError

    x = np.random.default_rng(0).random((200, 3)).astype(np.float32)
    booster = xgb.train(
        {"objective": "binary:logistic", "nthread": 1},
        xgb.DMatrix(x, label=(x[:, 0] > 0.5), feature_names=["a", "b", "c"]),
        3,
    )
    with pytest.raises(BadInputError, match=r"f0\.\.f2"):
        export_onnx(booster, 3, tmp_path / "m.onnx")


def test_label_look_ahead_is_counted_in_bars_across_weekends() -> None:
    """Daily weekday bars, H = 5: a Friday's label ends the next Friday, not on Wednesday."""
    days = pd.bdate_range("2024-01-01", periods=40, tz="UTC")
    frame = pd.DataFrame({"symbol": "AAA", "ts": days, "f": 0.0, "label_up": 1.0})
    ds = Dataset(frame, ["f"], "d1", 5, timedelta(days=1), "x")
    friday = int(np.flatnonzero(days.weekday == 4)[0])
    assert pd.Timestamp(ds.label_end[friday]) == days[friday + 5].tz_localize(None)
    assert (pd.Timestamp(ds.label_end[friday]) - days[friday].tz_localize(None)).days == 7
    split = holdout_split(ds.ts, 0.25, ds.label_end)
    cut = ds.ts[split.valid].min()
    assert (ds.label_end[split.train] < cut).all() and len(split.train) == 30 - 5
