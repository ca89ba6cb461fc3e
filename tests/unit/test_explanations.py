"""Explanations per prediction on a tiny XGBoost model built in tmp_path and a SQLite
warehouse: TreeSHAP adds up to the model's margin, features are found again and checked
against the logged hash, every prediction gets one row (explained or why not), reruns add
nothing, and the CLI and the Signals page show the rows."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from signalops import explanations as ex
from signalops.config import Settings
from signalops.features.offline_store import OfflineStore
from signalops.onnx_model import onnx_feature_names
from signalops.warehouse import Warehouse, predictions_table
from signalops.warehouse import explanations as explanation_rows
from tests.conftest import make_settings

SIGNAL = "direction_1h"
NAMES = ["ret_1", "ret_6", "vol_12", "rsi_14", "volume_z"]
FEATURE_SET = "v1"
NOW = datetime.now(UTC).replace(microsecond=0)
BAR0 = (NOW - timedelta(days=1)).replace(minute=0, second=0)


@pytest.fixture(scope="module")
def booster(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small binary:logistic booster, saved and loaded as retrain logs it (model.ubj)."""
    import xgboost as xgb

    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, len(NAMES))).astype(np.float32)
    y = x[:, 0] - 0.5 * x[:, 2] + 0.3 * x[:, 1] * x[:, 3] + rng.normal(0, 0.5, 600) > 0
    dtrain = xgb.DMatrix(x, label=y.astype(float), feature_names=onnx_feature_names(len(NAMES)))
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "base_score": 0.4}
    trained = xgb.train({**params, "nthread": 1, "seed": 1}, dtrain, num_boost_round=20)
    path = tmp_path_factory.mktemp("model") / "model.ubj"
    trained.save_model(str(path))
    loaded = xgb.Booster()
    loaded.load_model(str(path))
    return loaded


@pytest.fixture
def model(booster: Any) -> ex.NativeModel:
    spec = {"feature_set_version": FEATURE_SET, "names": NAMES}
    return ex.native_model(SIGNAL, "1", booster, spec)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(tmp_path)
    return make_settings(tmp_path, SIGNALOPS_EXPLAIN__TOP_K="3")


def _features(rows: int = 12, seed: int = 5) -> pd.DataFrame:
    """Offline-store rows for two symbols, one per 5-minute bar from BAR0."""
    rng = np.random.default_rng(seed)
    frames = []
    for symbol in ("AAA", "BBB"):
        ts = pd.date_range(BAR0, periods=rows, freq="5min", tz="UTC")
        values = rng.normal(size=(rows, len(NAMES)))
        frames.append(pd.DataFrame(values, columns=NAMES).assign(symbol=symbol, ts=ts))
    return pd.concat(frames, ignore_index=True)[["symbol", "ts", *NAMES]]


# -- TreeSHAP ------------------------------------------------------------------------------


def test_contributions_and_base_value_add_up_to_the_margin(booster: Any) -> None:
    import xgboost as xgb

    rng = np.random.default_rng(7)
    x = rng.normal(scale=2.0, size=(400, len(NAMES))).astype(np.float32)
    sample = x[rng.choice(len(x), 50, replace=False)]
    shap = ex.contributions(booster, sample)
    dmatrix = xgb.DMatrix(sample, feature_names=onnx_feature_names(len(NAMES)))
    margin = booster.predict(dmatrix, output_margin=True)
    assert shap.values.shape == sample.shape
    np.testing.assert_allclose(shap.margin, margin, rtol=0, atol=1e-6)
    np.testing.assert_allclose(shap.base + shap.values.sum(axis=1), margin, rtol=0, atol=1e-5)
    # the bias column is the same expected margin for every row, and not zero (base_score)
    assert np.ptp(shap.base) < 1e-6 and abs(shap.base[0]) > 1e-3
    # P(up) of the margin is the model's probability
    np.testing.assert_allclose(
        [ex.sigmoid(m) for m in shap.margin], booster.predict(dmatrix), rtol=0, atol=1e-6
    )


def test_top_contributions_keep_the_largest_and_sum_the_rest() -> None:
    contribs = np.array([0.1, -0.5, 0.02, 0.3, -0.3])
    values = np.arange(5.0)
    top, rest = ex.top_contributions(NAMES, values, contribs, 3)
    assert [t["feature"] for t in top] == ["ret_6", "rsi_14", "volume_z"]  # tie: column order
    assert [t["value"] for t in top] == [1.0, 3.0, 4.0]
    assert rest == pytest.approx(0.12)
    assert sum(t["contribution"] for t in top) + rest == pytest.approx(contribs.sum())
    everything, nothing = ex.top_contributions(NAMES, values, contribs, 50)
    assert len(everything) == 5 and nothing == 0.0


def test_a_booster_that_does_not_fit_its_spec_is_refused(booster: Any) -> None:
    spec = {"feature_set_version": FEATURE_SET, "names": NAMES[:3]}
    with pytest.raises(ex.ModelUnavailable, match=r"direction_1h v7: model.ubj takes 5 .* names 3"):
        ex.native_model(SIGNAL, "7", booster, spec)


def test_features_hash_is_the_one_the_sidecar_logs() -> None:
    """The hash of ``serving.scoring`` (the prediction log's), on the rows it scores."""
    from signalops.serving.scoring import Scorer

    logged: list[Any] = []
    svc = SimpleNamespace(cfg=None, metrics=None, predlog=SimpleNamespace(submit=logged.extend))
    scorer = Scorer(svc)
    x = np.asarray(_features()[NAMES].to_numpy()[:4], dtype=np.float32)
    loaded = SimpleNamespace(signal=SIGNAL, version="1")
    scorer.log_rows(
        "r", loaded, "champion", x, np.full(4, 0.5), [None] * 4, ["HOLD"] * 4, ["ok"] * 4, 1.0,
        None,
    )  # fmt: skip
    assert [ex.features_hash(row) for row in x] == [r.features_hash for r in logged]
    # float64 values from the offline store hash as the float32 row the sidecar scored
    assert ex.features_hash(x[0].astype(np.float64)) == logged[0].features_hash
    assert ex.features_hash(x[0]) == hashlib.blake2b(x[0].tobytes(), digest_size=8).hexdigest()


# -- one version's predictions -------------------------------------------------------------


class _Store:
    """The offline store's ``read`` on a frame."""

    def __init__(self, frame: pd.DataFrame):
        self.frame = frame

    def read(self, version: str, symbols: list[str], start: Any, end: Any, columns: Any) -> Any:
        f = self.frame
        keep = f["symbol"].isin(symbols) & (f["ts"] >= start) & (f["ts"] < end)
        return f[keep][["symbol", "ts", *columns]].reset_index(drop=True)


def _prediction(i: int, symbol: str, features_ts: Any, row: np.ndarray | None) -> dict[str, Any]:
    return {
        "request_id": f"req-{i}",
        "row_index": 0,
        "signal_name": SIGNAL,
        "role": "champion",
        "model_version": "1",
        "symbol": symbol,
        "ts": NOW - timedelta(minutes=60 - i),
        "features_ts": features_ts,
        "features_hash": ex.features_hash(row) if row is not None else "0" * 16,
        "probability": 0.5,
    }


def test_explain_group_checks_hashes_and_stores_the_margin_identity(
    model: ex.NativeModel,
) -> None:
    features = _features()
    x = features[NAMES].to_numpy()
    ts = features["ts"]
    preds = pd.DataFrame(
        [
            _prediction(0, "AAA", ts[0], x[0]),
            _prediction(1, "BBB", ts[13], x[13]),
            _prediction(2, "AAA", ts[1], x[1] + 1e-3),  # not the stored row
            _prediction(3, "AAA", ts[0] - timedelta(days=2), x[0]),  # no row at that bar
        ]
    )
    preds["features_ts"] = pd.to_datetime(preds["features_ts"], utc=True)
    rows, _ = ex.explain_group(model, preds, _Store(features), 3, NOW)
    by_id = {r["request_id"]: r for r in rows}
    assert len(rows) == 4
    assert by_id["req-2"]["status"] == "hash_mismatch"
    assert by_id["req-3"]["status"] == "no_features"
    assert by_id["req-2"]["margin"] is None and by_id["req-3"]["contributions"] is None
    for request, i in (("req-0", 0), ("req-1", 13)):
        row = by_id[request]
        assert row["status"] == "explained"
        assert len(row["contributions"]) == 3
        total = row["base_value"] + sum(c["contribution"] for c in row["contributions"])
        assert total + row["rest"] == pytest.approx(row["margin"], abs=1e-5)
        expected = ex.contributions(model.booster, x[i : i + 1].astype(np.float32))
        assert row["margin"] == pytest.approx(float(expected.margin[0]), abs=1e-6)
        values = {c["feature"]: c["value"] for c in row["contributions"]}
        for name, value in values.items():
            assert value == pytest.approx(x[i, NAMES.index(name)], rel=1e-6)


# -- the batch step on a warehouse ---------------------------------------------------------


def _log_predictions(settings: Settings, features: pd.DataFrame) -> list[dict[str, Any]]:
    """Predictions as the sidecar logs them: by symbol (with the features' bar time), one
    without a bar time, one of a version the registry does not have."""
    x = features[NAMES].to_numpy().astype(np.float32)
    rows = []
    for i in range(len(features)):
        rows.append(
            {
                "request_id": f"req-{i:03d}",
                "row_index": 0,
                "signal_name": SIGNAL,
                "role": "champion" if i % 4 else "shadow",
                "ts": NOW - timedelta(minutes=120 - i),
                "symbol": features["symbol"].iloc[i],
                "model_version": "1",
                "features_hash": ex.features_hash(x[i]),
                "features_ts": features["ts"].iloc[i].to_pydatetime(),
                "probability": 0.5,
                "signal": "HOLD",
                "risk_decision": "ok",
                "latency_ms": 1.0,
            }
        )
    last = NOW - timedelta(minutes=1)  # after the others: not in the first batch
    inline = {**rows[0], "request_id": "inline", "symbol": None, "features_ts": None, "ts": last}
    gone = {**rows[1], "request_id": "gone", "model_version": "9", "ts": last}
    rows += [inline, gone]
    with Warehouse(settings.warehouse_url) as wh, wh.engine.begin() as conn:
        wh.create_all()
        conn.execute(predictions_table.insert(), rows)
    return rows


@pytest.fixture
def explained(
    settings: Settings, model: ex.NativeModel, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """The offline store, a logged batch, and the first explaining run (registry stubbed:
    version 1 is the tiny model, any other version is gone)."""
    features = _features()
    store = OfflineStore(settings.lake_dir)
    store.write_day(FEATURE_SET, BAR0.date(), features[features["ts"].dt.date == BAR0.date()])
    rest = features[features["ts"].dt.date != BAR0.date()]
    if not rest.empty:
        store.write_day(FEATURE_SET, rest["ts"].iloc[0].date(), rest)
    _log_predictions(settings, features)

    def load(registry: Any, version: str, nthread: int = 1) -> ex.NativeModel:
        if version != "1":
            raise ex.ModelUnavailable(f"{SIGNAL} v{version}: not in the registry")
        return model

    monkeypatch.setattr("signalops.registry.Registry", lambda settings, signal: signal)
    monkeypatch.setattr(ex, "load_native_model", load)
    first = ex.explain_predictions(settings, batch=10, now=NOW)
    return {"first": first, "features": features}


def test_the_step_is_incremental_ordered_and_idempotent(
    settings: Settings, explained: dict[str, Any]
) -> None:
    first = explained["first"]
    assert first["predictions"] == 10  # the batch: the oldest ten
    assert first["explained"] == 10
    rest = ex.explain_predictions(settings, now=NOW)
    assert rest["predictions"] == 16  # 24 by symbol + inline + gone - the first ten
    assert rest["explained"] == 14 and rest["no_bar_time"] == 1 and rest["no_model"] == 1
    assert rest["max_probability_error"] > 0.0  # the logged 0.5 is not the tiny model's
    again = ex.explain_predictions(settings, now=NOW)
    assert again["predictions"] == 0 and again["explained"] == 0
    with Warehouse(settings.warehouse_url) as wh, wh.connect() as conn:
        counts = explanation_rows.count_by_status(conn)
        newest = explanation_rows.newest(conn, SIGNAL, 100)
    assert counts == {"explained": 24, "no_bar_time": 1, "no_model": 1}
    assert [r["request_id"] for r in newest][:2] == ["req-023", "req-022"]
    for row in newest:
        top = row["contributions"]
        assert len(top) == 3
        assert abs(top[0]["contribution"]) >= abs(top[-1]["contribution"])
        total = row["base_value"] + sum(c["contribution"] for c in top) + row["rest"]
        assert total == pytest.approx(row["margin"], abs=1e-5)


def test_old_predictions_are_left_alone(settings: Settings, explained: dict[str, Any]) -> None:
    later = NOW + timedelta(days=settings.explain.lookback_days, hours=1)
    assert ex.explain_predictions(settings, now=later)["predictions"] == 0


def test_the_cli_shows_a_request_and_the_newest(
    settings: Settings,
    explained: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from signalops import cli

    monkeypatch.setenv("SIGNALOPS_STATE_DIR", str(settings.state_dir))
    assert cli.main(["explain", "req-001"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("request req-001 row 0: direction_1h champion v1, AAA at ")
    assert "margin " in out and "= base value " in out and "others" in out
    assert cli.main(["explain", "--last", "2", "--role", "champion", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [r["request_id"] for r in shown] == ["req-009", "req-007"]
    assert cli.main(["explain", "no-such-request"]) == cli.EXIT_BAD_INPUT
    assert "no explanations for request 'no-such-request'" in capsys.readouterr().err


def test_the_signals_page_shows_the_champions_newest(
    settings: Settings, explained: dict[str, Any]
) -> None:
    from signalops.cockpit.render import render_signal
    from signalops.cockpit.state import signal_state

    ex.explain_predictions(settings, now=NOW)
    page = signal_state(settings, SIGNAL, registry=False)
    assert [e["request_id"] for e in page.explanations][:3] == ["req-023", "req-022", "req-021"]
    assert all(e["request_id"] != "req-020" for e in page.explanations)  # a shadow row
    first = page.explanations[0]
    assert first["probability"] == pytest.approx(ex.sigmoid(first["margin"]))
    html = render_signal(settings, page)
    assert 'id="explanations"' in html
    top = first["contributions"][0]
    assert f"{top['feature']} {top['contribution']:+.3f}" in html


def test_the_sidecar_stays_lean() -> None:
    """The sidecar's modules import neither XGBoost nor the explanations."""
    import subprocess
    import sys

    code = (
        "import sys, signalops.serving.app, signalops.serving.sidecar, signalops.serving.scoring\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'xgboost'"
        " or m == 'signalops.explanations'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
