"""The warehouse on real PostgreSQL and on SQLite: idempotent upserts, late corrections."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from signalops.data.bars import BarValidationError
from signalops.data.sources import PostgresSource, SourceError
from signalops.warehouse import UpsertResult, Warehouse

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    url = (
        f"sqlite:///{tmp_path / 'wh.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    wh = Warehouse(url)
    wh.create_all()
    wh.create_all()  # idempotent
    yield wh
    wh.dispose()


def test_upsert_is_idempotent_and_applies_late_corrections(
    warehouse: Warehouse, bars: pd.DataFrame
) -> None:
    assert warehouse.upsert_bars(bars, "synthetic") == UpsertResult(len(bars), 0, 0)
    assert warehouse.upsert_bars(bars, "synthetic") == UpsertResult(0, 0, len(bars))
    corrected = bars.copy()
    corrected.loc[[3, 10], "close"] = corrected.loc[[3, 10], "close"] * 1.01
    corrected.loc[[3, 10], "high"] = corrected.loc[[3, 10], ["high", "close"]].max(axis=1)
    assert warehouse.upsert_bars(corrected, "synthetic") == UpsertResult(0, 2, len(bars) - 2)
    back = warehouse.read_bars(None)
    assert len(back) == len(bars)
    pd.testing.assert_frame_equal(
        back, corrected.sort_values(["symbol", "ts"]).reset_index(drop=True)
    )


def test_read_window_and_stats(warehouse: Warehouse, bars: pd.DataFrame) -> None:
    warehouse.upsert_bars(bars, "synthetic")
    start, end = bars.ts.iloc[100], bars.ts.iloc[112]
    part = warehouse.read_bars(["AAA"], start, end)
    assert len(part) == 12 and part.ts.min() == start and part.ts.max() < end
    stats = warehouse.bar_stats()
    assert stats.bars.tolist() == bars.groupby("symbol").size().tolist()
    assert warehouse.last_bar_ts() == bars.ts.max()


def test_a_failing_batch_writes_nothing(
    warehouse: Warehouse, bars: pd.DataFrame, monkeypatch
) -> None:
    """Chunks share one transaction: a failure in a later chunk rolls back the earlier ones."""
    monkeypatch.setattr("signalops.warehouse.core.UPSERT_CHUNK", 100)
    broken = bars.head(300).copy()
    broken["volume"] = broken["volume"].astype(object)
    broken.loc[250, "volume"] = None  # NOT NULL violation in the third chunk
    with pytest.raises(sa.exc.IntegrityError):
        warehouse.upsert_bars(broken, "synthetic")
    assert warehouse.read_bars(None).empty


def test_postgres_source_table_and_query(pg_url: str, bars: pd.DataFrame) -> None:
    engine = sa.create_engine(pg_url)
    bars.to_sql("vendor_bars", engine, if_exists="replace", index=False)
    start, end = bars.ts.iloc[10].to_pydatetime(), bars.ts.iloc[40].to_pydatetime()
    by_table = PostgresSource(pg_url, table="vendor_bars").fetch(start, end, ["AAA"])
    assert len(by_table) == 30 and str(by_table.ts.dtype) == "datetime64[ns, UTC]"
    query = "SELECT * FROM vendor_bars WHERE ts >= :start AND ts < :end AND symbol = 'BBB'"
    by_query = PostgresSource(pg_url, query=query).fetch(start, end)
    assert set(by_query.symbol) == {"BBB"} and len(by_query) == 30

    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE vendor_bars SET volume = -1 WHERE symbol = 'AAA' AND ts = :t"),
            {"t": start},
        )
    with pytest.raises(BarValidationError, match=r"negative volume at result row 1"):
        PostgresSource(pg_url, table="vendor_bars").fetch(start, end)
    with pytest.raises(SourceError, match="not a table name"):
        PostgresSource(pg_url, table="bars; DROP TABLE x").fetch(start, end)
    with pytest.raises(SourceError, match=":end"):
        PostgresSource(pg_url, query="SELECT * FROM vendor_bars WHERE ts >= :start").fetch(
            start, end
        )
    engine.dispose()


def test_a_scheduled_run_continues_the_warehouse_or_says_how_to_backfill(
    tmp_path: Path,
) -> None:
    """``make run`` ends its history at some hour; the scheduler's next interval may start
    later (the next day): the run collects from the bar after the warehouse's newest, up to
    ``market.catchup_max_bars``, and beyond that fails with the backfill command."""
    from datetime import UTC, datetime, timedelta

    from signalops.config import load_settings
    from signalops.data.collect import CatchUpTooLargeError, catch_up_start

    settings = load_settings(
        env={
            "SIGNALOPS_STATE_DIR": str(tmp_path),
            "SIGNALOPS_MARKET__SYMBOLS": "AAA,BBB",
            "SIGNALOPS_MARKET__CATCHUP_MAX_BARS": "300",
        },
        config_file=None,
    )
    interval = datetime(2026, 10, 2, 6, tzinfo=UTC)
    # empty warehouse: the interval and, before it, the feature set's warm-up (400 bars)
    seeded = catch_up_start(settings, interval)
    assert seeded == interval - settings.market.market_calendar.span_for(400)
    assert (interval - seeded) / settings.market.bar >= 400
    ts = pd.date_range("2026-10-01T00:00Z", "2026-10-01T23:55Z", freq="5min")
    bars = pd.DataFrame(
        {
            "symbol": ["AAA"] * len(ts) + ["BBB"] * (len(ts) - 12),  # BBB lags an hour
            "ts": list(ts) + list(ts[:-12]),
        }
    ).assign(open=10.0, high=11.0, low=9.0, close=10.5, volume=100.0)
    with Warehouse(settings.warehouse_url) as wh:
        wh.upsert_bars(bars, "synthetic")
    resumed = catch_up_start(settings, interval)
    assert resumed == datetime(2026, 10, 1, 23, tzinfo=UTC)  # the laggard's next bar
    on_time = datetime(2026, 10, 2, 0, tzinfo=UTC)
    assert catch_up_start(settings, on_time, ["AAA"]) == on_time  # no hole: unchanged
    too_far = interval + timedelta(days=2)
    with pytest.raises(CatchUpTooLargeError) as err:
        catch_up_start(settings, too_far)
    message = str(err.value)
    assert "more than market.catchup_max_bars (300)" in message
    assert "airflow dags trigger market_data -c" in message
    assert '"start": "2026-10-01T23:00:00+00:00"' in message
