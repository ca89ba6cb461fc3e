"""Explanations per prediction end to end, on state the pipeline's own functions build: a
lake of synthetic bars and features, a champion from a real retrain (MLflow registry,
native model + ONNX), the real sidecar logging to a real PostgreSQL warehouse (inline rows
with their bar times, a request by symbol from the online store, one row whose features
were altered, rows without a bar time). Then the outcomes DAG's ``explain`` step: every
prediction gets one row, explained or why not; a second run adds nothing; the stored
numbers add up to the margin, are the native model's own TreeSHAP on the offline row, and
agree with the probability the sidecar served; the CLI and the Signals page show them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from signalops.config import Settings
from signalops.features.offline_store import OfflineStore
from signalops.warehouse import Warehouse
from signalops.warehouse import explanations as explanation_rows
from tests.conftest import (
    TRAIN_END,
    TRAIN_START,
    TRAIN_SYMBOLS,
    build_lake,
    fresh_pg_database,
    training_settings,
)
from tests.sidecar_process import free_port, running_sidecar

pytestmark = pytest.mark.integration

SIGNAL = "direction_1h"
TRAINED_UNTIL = TRAIN_END - timedelta(days=4)  # traffic: feature rows after the training data
OVERRIDES = {
    "SIGNALOPS_SERVING__LOG_FLUSH_INTERVAL_S": "0.05",
    "SIGNALOPS_SERVING__MAX_FEATURE_AGE_S": "1e9",  # the lake's newest bar is months old
    "SIGNALOPS_SERVING__RISK__MAX_TRADES_PER_DAY": "100000000",
    "SIGNALOPS_EXPLAIN__TOP_K": "4",
    # a smaller retrain: explanations need a champion, not a good one
    "SIGNALOPS_TRAINING__XGBOOST__NUM_BOOST_ROUND": "60",
    "SIGNALOPS_TRAINING__CV_FOLDS": "2",
    "SIGNALOPS_DRIFT__NULL_BLOCKS": "50",
}
INLINE_REQUESTS, INLINE_ROWS = 6, 10


@dataclass
class Served:
    settings: Settings
    env: dict[str, str]
    logged: dict[str, list[float]]  # request id -> the probabilities the sidecar answered
    names: list[str]


def _traffic(settings: Settings, env: dict[str, str], tmp: Path) -> tuple[dict, list[str]]:
    """Inline feature rows with their bar times, one request by symbol (online store), one
    with an altered value, one without bar times, through the real sidecar."""
    store = OfflineStore(settings.lake_dir)
    names = list(store.read_spec("v1")["names"])
    rows = store.read("v1", start=TRAINED_UNTIL, end=TRAIN_END - timedelta(hours=2))
    by_symbol = [group.sort_values("ts") for _, group in rows.groupby("symbol")]
    bodies: list[dict[str, Any]] = []
    for i in range(INLINE_REQUESTS):
        chunk = by_symbol[i % len(by_symbol)].iloc[i * INLINE_ROWS : (i + 1) * INLINE_ROWS]
        bodies.append(
            {
                "request_id": f"inline-{i}",
                "symbol": chunk["symbol"].iloc[0],
                "features": chunk[names].to_dict("records"),
                "features_ts": [t.isoformat() for t in chunk["ts"]],
            }
        )
    altered = by_symbol[0].iloc[100:103]
    records = altered[names].to_dict("records")
    records[1][names[0]] += 0.01  # not the row the offline store holds for that bar
    bodies.append(
        {
            "request_id": "altered",
            "symbol": altered["symbol"].iloc[0],
            "features": records,
            "features_ts": [t.isoformat() for t in altered["ts"]],
        }
    )
    bodies.append(
        {
            "request_id": "no-bar-time",
            "symbol": altered["symbol"].iloc[0],
            "features": records[:2],
        }
    )
    bodies.append({"request_id": "by-symbol", "symbols": TRAIN_SYMBOLS.split(",")})
    env = {**env, "SIGNALOPS_SERVING__PORT": str(free_port())}
    logged = {}
    with running_sidecar(env, tmp, tmp / "sidecar.log") as (url, _), httpx.Client() as client:
        for body in bodies:
            r = client.post(f"{url}/v1/signals", json=body, timeout=30)
            assert r.status_code == 200, r.text
            logged[body["request_id"]] = [s["probability"] for s in r.json()["predictions"]]
    # leaving the block stopped the sidecar with SIGTERM: its log is flushed
    return logged, names


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from signalops.features.pipeline import publish_online
    from signalops.training import retrain as steps

    tmp = tmp_path_factory.mktemp("explanations")
    with fresh_pg_database("explain_wh") as warehouse_url:
        overrides = {**OVERRIDES, "SIGNALOPS_WAREHOUSE__URL": warehouse_url}
        settings = training_settings(tmp, **overrides)
        build_lake(settings, TRAIN_START, TRAIN_END)
        publish_online(settings, "v1")
        request = steps.plan_request(settings, {"end": TRAINED_UNTIL.isoformat()}, "explain-v1")
        results = steps.run_all(settings, request)
        assert "register" in results, {k: v.summary for k, v in results.items()}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNALOPS_", "AIRFLOW"))}
        env.update(
            overrides,
            SIGNALOPS_STATE_DIR=str(settings.state_dir),
            SIGNALOPS_MARKET__SYMBOLS=TRAIN_SYMBOLS,
            SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES="200",
        )
        logged, names = _traffic(settings, env, tmp)
        yield Served(settings, env, logged, names)


def test_explain_step_on_real_state(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from signalops.explanations import contributions, explain_predictions, load_native_model
    from signalops.registry import Registry

    settings = served.settings
    logged_rows = sum(len(p) for p in served.logged.values())
    assert logged_rows == INLINE_REQUESTS * INLINE_ROWS + 3 + 2 + 3

    first = explain_predictions(settings)
    assert first["predictions"] == logged_rows, first
    assert first["hash_mismatch"] == 1 and first["no_bar_time"] == 2, first
    assert first["no_features"] == 0 and first["no_model"] == 0, first
    assert first["explained"] == logged_rows - 3, first
    # the native model is the one the sidecar served (its ONNX export)
    assert first["max_probability_error"] < 1e-4, first

    again = explain_predictions(settings)
    assert again["predictions"] == 0 and again["explained"] == 0, again

    with Warehouse(settings.warehouse_url) as wh, wh.connect() as conn:
        assert explanation_rows.count_by_status(conn) == {
            "explained": logged_rows - 3,
            "hash_mismatch": 1,
            "no_bar_time": 2,
        }
        stored = explanation_rows.newest(conn, SIGNAL, 1000)
        altered = explanation_rows.of_request(conn, "altered")
    assert [r["status"] for r in altered] == ["explained", "hash_mismatch", "explained"]
    assert len(stored) == logged_rows - 3

    # the identity on every stored row, and the numbers are the model's own
    model = load_native_model(Registry(settings), "1")
    store = OfflineStore(settings.lake_dir)
    offline = store.read("v1", columns=list(model.feature_names)).set_index(["symbol", "ts"])
    for row in stored:
        top = row["contributions"]
        assert len(top) == 4
        total = row["base_value"] + sum(c["contribution"] for c in top) + row["rest"]
        assert total == pytest.approx(row["margin"], abs=1e-4)
        served_p = served.logged[row["request_id"]][row["row_index"]]
        assert 1 / (1 + np.exp(-row["margin"])) == pytest.approx(served_p, abs=1e-4)
    for row in stored[::9]:
        x = offline.loc[(row["symbol"], row["features_ts"])].to_numpy(dtype=np.float32)
        shap = contributions(model.booster, x[None, :])
        assert row["margin"] == pytest.approx(float(shap.margin[0]), abs=1e-6)
        for c in row["contributions"]:
            i = list(model.feature_names).index(c["feature"])
            assert c["contribution"] == pytest.approx(float(shap.values[0, i]), abs=1e-6)
            assert c["value"] == pytest.approx(float(x[i]), rel=1e-6)

    # the CLI and the Signals page read them back
    from signalops import cli
    from signalops.cockpit.state import signal_state

    for key in ("SIGNALOPS_STATE_DIR", "SIGNALOPS_WAREHOUSE__URL"):
        monkeypatch.setenv(key, served.env[key])
    assert cli.main(["explain", "by-symbol"]) == 0
    out = capsys.readouterr().out
    assert out.count("request by-symbol row ") == 3 and "P(up)" in out
    page = signal_state(settings, SIGNAL)
    assert [v.version for v in page.versions if v.alias == "champion"] == ["1"]
    assert len(page.explanations) == 10
    assert page.explanations[0]["request_id"] == "by-symbol"
