"""The validation gate in real Airflow runs (``airflow dags test``): bad data that passes
the extract's own checks is stopped by the GX suites before it is loaded (bars) or published
(features); after the data is fixed, the same runs pass with no manual cleanup."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from signalops.data.synthetic import SyntheticSource
from signalops.features.offline_store import OfflineStore
from tests.conftest import ORIGIN
from tests.integration.test_airflow_dags import _stack

pytestmark = pytest.mark.integration

BAR = timedelta(minutes=5)


def _write_csv(path: Path, bars: pd.DataFrame) -> None:
    out = bars.copy()
    out["ts"] = out["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)


def test_gate_blocks_bad_bars_and_bad_features_then_a_fixed_rerun_passes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp = tmp_path_factory.mktemp("airflow-gate")
    start, end = ORIGIN, ORIGIN + timedelta(days=2)
    good = SyntheticSource(symbols=("AAA", "BBB"), bar=BAR, seed=5, origin=ORIGIN).fetch(start, end)
    csv = tmp / "bars.csv"
    stack = _stack(tmp, f"sqlite:///{tmp / 'airflow.db'}", None)
    stack.env.update(
        SIGNALOPS_MARKET__SOURCE="csv",
        SIGNALOPS_MARKET__PATH=str(csv),
        SIGNALOPS_VALIDATION__MAX_GAP_BARS="48",
    )
    window = {"start": start.isoformat(), "end": end.isoformat()}

    # 1. A five-hour hole in AAA's bars: the extract only reports gaps; the bars suite
    #    stops the run before the load.
    hole = (good["symbol"] == "AAA") & (good["ts"] >= start + timedelta(hours=30))
    hole &= good["ts"] < start + timedelta(hours=35)
    _write_csv(csv, good[~hole])
    proc = stack.dags_test("market_data", end.isoformat(), window, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "suite bars (v1)" in out and "expect_column_values_to_be_between" in out
    assert "missing_bars" in out and "AAA" in out
    assert "data docs:" in out
    assert "up_for_retry" not in out  # bad data is not retried
    assert stack.counts()["bars"] == 0  # nothing loaded

    # 2. A bad tick (every price x1000 for one bar: consistent OHLC, so the extract lets it
    #    through) makes returns far outside their declared range: the features suite stops
    #    the features run; nothing reaches the offline store, no signalops/features event.
    bad = good.copy()
    tick = (bad["symbol"] == "BBB") & (bad["ts"] == start + timedelta(hours=40))
    bad.loc[tick, ["open", "high", "low", "close"]] *= 1000
    _write_csv(csv, bad)
    stack.dags_test("market_data", end.isoformat(), window)
    proc = stack.dags_test("features", end.isoformat(), window, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "suite features.v1 (v1)" in out and "ret_1" in out
    assert "expect_column_values_to_be_between" in out
    settings_lake = Path(stack.env["SIGNALOPS_STATE_DIR"]) / "lake"
    assert not list(OfflineStore(settings_lake).version_dir("v1").rglob("*.parquet"))
    assert len(stack.asset_events("signalops/features")) == 0

    # 3. The source is fixed: the same runs pass, no cleanup by hand.
    _write_csv(csv, good)
    stack.dags_test("market_data", end.isoformat(), window)
    stack.dags_test("features", end.isoformat(), window)
    counts = stack.counts()
    assert counts["bars"] == len(good)
    assert counts["offline_rows"] > 0 and counts["online"] == 2
    assert len(stack.asset_events("signalops/features")) == 1
    results = sorted((Path(stack.env["SIGNALOPS_STATE_DIR"]) / "validation").rglob("*.json"))
    assert any(json.loads(p.read_text())["success"] for p in results)
