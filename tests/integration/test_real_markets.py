"""The whole chain on real market data, through the real DAGs (``airflow dags test``):
daily bars here, hourly bars in ``test_real_markets_hourly.py``.

Daily GOOG (2004-2013, an exchange calendar with holidays) and hourly EURUSD (2017-2018,
weekends), as shipped by the PyPI package ``backtesting``, with only the four market
settings a new user sets: source, path, symbols, bar size. Everything else follows the bar
size (``signalops.config.bar_defaults``).

1. market_data collects the whole file; features builds a row for every bar with enough
   history (counted in bars: weekends and holidays do not eat the warm-up).
2. retrain judges the model with every gate rule and writes the verdict (on these data the
   honest verdict is a rejection: no edge after costs).
3. drift_monitor has no champion to watch: skipped, with the reason.
4. To have a champion to watch, the gate is relaxed explicitly (``baseline_margin``,
   ``min_sharpe``, floors) and a model is trained on an early stretch; drift_monitor then
   calls a window inside its training period calm, and (daily) the 2008 crisis high.
   Every check is printed (run with ``-s``): the figures in the README come from here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from signalops.config import load_settings
from signalops.features.definitions import get_feature_set
from signalops.features.offline_store import OfflineStore
from signalops.registry import Registry
from signalops.registry import contracts as c
from tests.integration.test_airflow_dags import AirflowStack, _stack
from tests.real_data import real_bars, real_csv

pytestmark = pytest.mark.integration


@dataclasses.dataclass(frozen=True)
class Market:
    file: str
    symbol: str
    bar_minutes: int
    reference_end: str  # the relaxed champion trains on data before this
    calm_end: str  # a drift window inside that training period
    shifted_end: str | None  # a drift window in a later, different regime


MARKETS = {
    "daily": Market("GOOG.csv", "GOOG", 1440, "2008-01-01", "2007-06-01", "2008-12-31"),
    "hourly": Market("EURUSD.csv", "EURUSD", 60, "2018-01-01", "2017-10-02", None),
}
RELAXED_GATE = {
    "SIGNALOPS_EVALUATION__BASELINE_MARGIN": "1",
    "SIGNALOPS_EVALUATION__MIN_SHARPE": "-1000000",
    "SIGNALOPS_EVALUATION__MIN_ROC_AUC": "0",
    "SIGNALOPS_EVALUATION__MAX_LOG_LOSS": "100",
}


def _drift_checks(warehouse_url: str) -> list:
    engine = sa.create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT * FROM drift_checks ORDER BY window_end, window_start")
        ).fetchall()
    engine.dispose()
    return list(rows)


def _logical_dates() -> Iterator[str]:
    """Logical dates for the runs: after the DAGs' start date (an earlier one runs no task);
    the market's own dates travel in the params."""
    when = datetime(2026, 6, 1, tzinfo=UTC)
    while True:
        yield when.isoformat()
        when += timedelta(hours=1)


def _newest_evaluation(state: Path) -> dict:
    reports = sorted((state / "retrain").glob("*/evaluation.json"), key=lambda p: p.stat().st_mtime)
    assert reports, "retrain wrote no evaluation report"
    return json.loads(reports[-1].read_text())


def run_chain(name: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The chain on one market (each market's test lives in its own module, so that the
    two run on different pytest-xdist workers)."""
    market = MARKETS[name]
    tmp = tmp_path_factory.mktemp(f"real-{name}")
    stack: AirflowStack = _stack(tmp, f"sqlite:///{tmp / 'airflow.db'}", None)
    stack.env.update(
        SIGNALOPS_MARKET__SOURCE="csv",
        SIGNALOPS_MARKET__PATH=str(real_csv(market.file)),
        SIGNALOPS_MARKET__SYMBOLS=market.symbol,
        SIGNALOPS_MARKET__BAR_MINUTES=str(market.bar_minutes),
    )
    settings = load_settings(env=stack.env, config_file=None)
    state = settings.state_dir
    bars = real_bars(market.file)
    first, last = bars["ts"].min(), bars["ts"].max()
    window = {"start": first.isoformat(), "end": (last + settings.market.bar).isoformat()}
    when = _logical_dates()

    # 1. collect everything, then features for every bar with enough history
    stack.dags_test("market_data", next(when), window)
    feature_set = get_feature_set(settings.features.feature_set_version)
    stack.dags_test("features", next(when), window)
    rows = OfflineStore(settings.lake_dir).read(feature_set.version, columns=["label_up"])
    assert len(rows) == len(bars) - feature_set.warmup > 0
    assert int(rows["label_up"].isna().sum()) == settings.features.horizon_bars

    # 2. retrain: every rule judged, the verdict in the report
    stack.dags_test("retrain", next(when))
    report = _newest_evaluation(state)
    checks = report["decision"]["checks"]
    assert set(checks) >= {"beats_baseline", "net_sharpe", "floor_roc_auc"}
    failed = [k for k, v in checks.items() if v["status"] == "fail"]
    assert report["decision"]["passed"] == (not failed)
    assert report["annualization"]["source"] == "observed"
    registry = Registry(settings)
    champion = registry.by_alias(c.ALIAS_CHAMPION)
    assert (champion is not None) == report["decision"]["passed"]

    # 3. no champion yet: the drift check is skipped (the DAG run still succeeds)
    if champion is None:
        proc = stack.dags_test("drift_monitor", next(when), {"end": window["end"]})
        assert "no champion registered yet" in proc.stdout + proc.stderr
        assert _drift_checks(settings.warehouse_url) == []

    # 4. a champion trained on the early stretch, with the gate relaxed on purpose
    relaxed = dataclasses.replace(stack, env={**stack.env, **RELAXED_GATE})
    relaxed.dags_test("retrain", next(when), {"end": market.reference_end, "force": True})
    champion = registry.by_alias(c.ALIAS_CHAMPION)
    assert champion is not None
    stack.dags_test("drift_monitor", next(when), {"end": market.calm_end})
    calm = _drift_checks(settings.warehouse_url)[-1]
    print(f"\n{name}: {len(rows)} feature rows; gate {report['decision']['action']}: {failed}")
    assert calm.severity in ("none", "low"), (calm.severity, calm.reasons)
    if market.shifted_end:
        # Sep..Dec 2008 (84 sessions): the window the crisis fills
        stack.dags_test("drift_monitor", next(when), {"end": market.shifted_end, "window_bars": 84})
    checks = _drift_checks(settings.warehouse_url)
    for r in checks:
        print(f"{name} drift {r.window_start} .. {r.window_end}: {r.severity} {r.reasons}")
    if market.shifted_end:
        assert [r.severity for r in checks] == ["none", "high"]  # calm first, then 2008


def test_daily_market_chain_with_four_settings(tmp_path_factory: pytest.TempPathFactory) -> None:
    run_chain("daily", tmp_path_factory)
