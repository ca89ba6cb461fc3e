"""Offline store (Parquet), online store on the warehouse table, and the per-day job."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest

from signalops.config import Settings
from signalops.features.compute import compute_features
from signalops.features.definitions import LABEL_UP, get_feature_set
from signalops.features.offline_store import OfflineStore
from signalops.features.online_store import SqlOnlineStore
from signalops.features.pipeline import NoFeatureRowsError, build_features, publish_online
from signalops.warehouse import Warehouse
from tests.conftest import ORIGIN, make_settings

V1 = get_feature_set("v1")
DAY = timedelta(days=1)


@pytest.fixture
def features(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_features(bars, V1, 12)


def test_offline_roundtrip_partitions_and_idempotent_rewrite(tmp_path, features) -> None:
    store = OfflineStore(tmp_path / "lake")
    day = date(2026, 1, 3)
    rows = features[features.ts.dt.date == day]
    files = store.write_day("v1", day, rows)
    assert {f.symbol for f in files} == {"AAA", "BBB"}
    assert (
        files[0].path
        == tmp_path / "lake/features/feature_set=v1/symbol=AAA/date=2026-01-03/part-0.parquet"
    )
    first_bytes = files[0].path.read_bytes()
    store.write_day("v1", day, rows)  # rerun
    assert files[0].path.read_bytes() == first_bytes
    back = store.read("v1")
    pd.testing.assert_frame_equal(back, rows.reset_index(drop=True))
    assert not list((tmp_path / "lake").rglob(".tmp-*")), "no temporary files left behind"


def test_offline_read_filters(tmp_path, features) -> None:
    store = OfflineStore(tmp_path / "lake")
    for day, rows in features.groupby(features.ts.dt.date):
        store.write_day("v1", day, rows)
    start, end = pd.Timestamp("2026-01-03T06:00Z"), pd.Timestamp("2026-01-03T07:00Z")
    part = store.read("v1", symbols=["BBB"], start=start, end=end, columns=["rsi_14"])
    assert list(part.columns) == ["symbol", "ts", "rsi_14"]
    assert len(part) == 12 and set(part.symbol) == {"BBB"}
    assert store.read("v2").empty
    latest = store.latest("v1")
    assert (
        latest.set_index("symbol")["ts"].to_dict()
        == features.groupby("symbol")["ts"].max().to_dict()
    )


def test_sql_online_store_never_goes_back_in_time(settings: Settings, features) -> None:
    store = SqlOnlineStore(Warehouse(settings.warehouse_url))
    newest = features.groupby("symbol").tail(1)
    older = features.groupby("symbol").nth(-10)
    assert store.write("v1", newest, V1.names) == 2
    assert store.write("v1", older, V1.names) == 0  # a backfill must not roll back
    got = store.read("v1", ["AAA", "BBB", "ZZZ"])
    assert set(got) == {"AAA", "BBB"}
    aaa = newest[newest.symbol == "AAA"].iloc[0]
    assert got["AAA"].ts == aaa.ts.to_pydatetime()
    assert got["AAA"].values == {n: aaa[n] for n in V1.names}
    assert store.read("v2", ["AAA"]) == {}
    store.close()


def test_online_store_refuses_non_finite(settings: Settings, features) -> None:
    row = features.groupby("symbol").tail(1).copy()
    row.loc[:, "rsi_14"] = float("nan")
    store = SqlOnlineStore(Warehouse(settings.warehouse_url))
    with pytest.raises(ValueError, match="rsi_14"):
        store.write("v1", row, V1.names)
    store.close()


def _load(settings: Settings, bars: pd.DataFrame) -> None:
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        warehouse.upsert_bars(bars, "synthetic")


def test_hourly_runs_equal_one_backfill(tmp_path, synthetic) -> None:
    """Day files are a function of the bars only: incremental runs == one backfill run."""
    end = ORIGIN + timedelta(days=3)
    bars = synthetic.fetch(ORIGIN, end)
    hourly = make_settings(tmp_path / "hourly", SIGNALOPS_MARKET__SYMBOLS="AAA,BBB")
    backfill = make_settings(tmp_path / "backfill", SIGNALOPS_MARKET__SYMBOLS="AAA,BBB")
    _load(backfill, bars)
    build_features(backfill, ORIGIN, end)

    t = ORIGIN + timedelta(days=2)  # one day (288 bars) is less than the 400-bar warm-up
    _load(hourly, bars[bars.ts < pd.Timestamp(t)])
    build_features(hourly, ORIGIN, t)
    while t < end:  # bars arrive hour by hour, each followed by its features run
        nxt = t + timedelta(hours=1)
        _load(hourly, bars[(bars.ts >= pd.Timestamp(t)) & (bars.ts < pd.Timestamp(nxt))])
        build_features(hourly, t, nxt)
        t = nxt
    a = OfflineStore(hourly.lake_dir).read("v1")
    b = OfflineStore(backfill.lake_dir).read("v1")
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    assert a[LABEL_UP].isna().sum() == 2 * 12  # only the newest H bars per symbol wait for a label


def test_no_rows_from_existing_bars_is_an_error_naming_cause_and_fix(tmp_path, synthetic) -> None:
    settings = make_settings(tmp_path, SIGNALOPS_MARKET__SYMBOLS="AAA,BBB")
    _load(settings, synthetic.fetch(ORIGIN, ORIGIN + timedelta(days=1)))
    with pytest.raises(NoFeatureRowsError) as caught:
        build_features(settings, ORIGIN, ORIGIN + timedelta(days=1))
    message = str(caught.value)
    assert "0 rows from 576 bars" in message and "400 earlier bars" in message
    assert "AAA has 0 bars before 2026-01-01" in message and "collect" in message


def test_daily_bars_count_lookbacks_in_bars_not_days(tmp_path) -> None:
    """Weekday bars: every bar with 251 earlier bars gets a row, weekends or not."""
    settings = make_settings(
        tmp_path, SIGNALOPS_MARKET__SYMBOLS="AAA", SIGNALOPS_MARKET__BAR_MINUTES="1440"
    )
    d1 = get_feature_set(settings.features.feature_set_version)
    days = pd.bdate_range("2020-01-01", periods=d1.warmup + 60, tz="UTC")
    close = 100 * pd.Series(range(len(days))).mul(0.001).add(1).to_numpy()
    bars = pd.DataFrame(
        {"symbol": "AAA", "ts": days, "open": close, "high": close * 1.01, "low": close * 0.99}
    ).assign(close=close * 1.001, volume=1e6 + 1e4 * (pd.Series(range(len(days))) % 7))
    _load(settings, bars)
    built = build_features(settings, days[0].to_pydatetime(), days[-1].to_pydatetime() + DAY)
    assert built.rows == built.expected_rows == 60 and built.bars == len(days)
    rows = OfflineStore(settings.lake_dir).read(d1.version)
    assert list(rows["ts"]) == list(days[d1.warmup :])
    assert rows[LABEL_UP].isna().sum() == settings.features.horizon_bars
    # one more bar, one incremental run: the same rows as a backfill of everything
    again = build_features(settings, days[-3].to_pydatetime(), days[-1].to_pydatetime() + DAY)
    assert again.rows >= 3
    pd.testing.assert_frame_equal(OfflineStore(settings.lake_dir).read(d1.version), rows)


def test_rerun_and_new_version_backfill(settings: Settings, synthetic) -> None:
    end = ORIGIN + timedelta(days=3)
    _load(settings, synthetic.fetch(ORIGIN, end))
    settings = settings.model_copy(
        update={"market": settings.market.model_copy(update={"symbols": ("AAA", "BBB")})}
    )
    first = build_features(settings, ORIGIN, end)
    again = build_features(settings, ORIGIN, end)
    assert first == again
    v2 = build_features(settings, ORIGIN, end, version="v2")
    store = OfflineStore(settings.lake_dir)
    assert set(get_feature_set("v2").names) <= set(store.read("v2").columns)
    assert get_feature_set("v2").warmup == V1.warmup and v2.rows == first.rows
    assert store.read_spec("v2")["names"] == get_feature_set("v2").names
    published = publish_online(settings, "v2")
    assert published["symbols"] == 2 and published["backend"] == "warehouse table"


def test_sortedness_check_of_offline_reads() -> None:
    from signalops.features.offline_store import _sorted_by_symbol_ts

    ts = pd.date_range("2026-01-01", periods=3, freq="5min", tz="UTC")
    good = pd.DataFrame({"symbol": ["A", "A", "A", "B", "B", "B"], "ts": [*ts, *ts]})
    assert _sorted_by_symbol_ts(good)
    assert not _sorted_by_symbol_ts(good.iloc[[0, 2, 1, 3, 4, 5]])  # time goes back
    assert not _sorted_by_symbol_ts(good.iloc[[3, 4, 5, 0, 1, 2]])  # symbols out of order
