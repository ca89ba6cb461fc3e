"""Market calendars: gaps are missing expected bars, never weekends or closed sessions."""

from __future__ import annotations

from datetime import time, timedelta

import numpy as np
import pandas as pd
import pytest

from signalops.calendar import MarketCalendar, observed_bars_per_year
from signalops.data.bars import find_gaps
from signalops.validation import GAP_COLUMN, bars_frame
from tests.real_data import real_bars

DAY, HOUR = timedelta(days=1), timedelta(hours=1)


def _missing(calendar: MarketCalendar, prev: str, cur: str) -> float:
    return float(
        calendar.missing_between(
            pd.Series([pd.Timestamp(prev, tz="UTC")]), pd.Series([pd.Timestamp(cur, tz="UTC")])
        )[0]
    )


def test_weekdays_daily_weekend_is_no_gap_a_missing_weekday_is() -> None:
    cal = MarketCalendar("weekdays", DAY)
    assert _missing(cal, "2024-01-05", "2024-01-08") == 0  # Friday -> Monday
    assert _missing(cal, "2024-01-05", "2024-01-09") == 1  # Monday missing
    assert _missing(cal, "2024-01-08", "2024-01-09") == 0
    assert _missing(cal, "2023-01-02", "2024-01-02") == 260  # a missing year


def test_fx_week_closes_friday_17h_new_york_opens_sunday() -> None:
    cal = MarketCalendar("fx", HOUR)
    # Friday 20:00 UTC (16:00 EDT) is the last bar; Sunday 21:00 UTC (17:00 EDT) the first
    assert _missing(cal, "2017-04-21 20:00", "2017-04-23 21:00") == 0
    assert _missing(cal, "2017-04-21 20:00", "2017-04-23 23:00") == 2
    # in winter (EST) the week opens an hour later in UTC
    assert _missing(cal, "2017-12-15 21:00", "2017-12-17 22:00") == 0


def test_sessions_skip_nights_and_weekends() -> None:
    cal = MarketCalendar(
        "sessions", timedelta(minutes=30), "America/New_York", (time(9, 30), time(16, 0))
    )
    # Friday 15:30 EDT (19:30 UTC) -> Monday 09:30 EDT (13:30 UTC): nothing missing
    assert _missing(cal, "2024-06-07 19:30", "2024-06-10 13:30") == 0
    assert _missing(cal, "2024-06-07 19:30", "2024-06-10 14:30") == 2
    assert cal.periods_per_year() == pytest.approx(365.2425 * 5 / 7 * 13, rel=0.02)


def test_always_counts_every_slot_and_span_holds_the_bars() -> None:
    cal = MarketCalendar("always", timedelta(minutes=5))
    assert _missing(cal, "2024-01-01 00:00", "2024-01-01 01:00") == 11
    weekdays = MarketCalendar("weekdays", DAY)
    span = weekdays.span_for(63)
    first = pd.Timestamp("2024-01-01", tz="UTC")
    stamps = pd.date_range(first, first + span, freq="D", inclusive="left")
    assert weekdays.is_open(stamps).sum() >= 63


def test_real_daily_bars_pass_the_gap_check_and_a_missing_year_fails_naming_it() -> None:
    goog = real_bars("GOOG.csv")
    cal = MarketCalendar("weekdays", DAY)
    frame = bars_frame(goog, None, cal)
    assert frame[GAP_COLUMN].max() <= 10  # holidays only: no hole in the file
    hole = goog[(goog["ts"] < "2009-01-01") | (goog["ts"] >= "2010-01-01")]
    frame = bars_frame(hole.reset_index(drop=True), None, cal)
    worst = frame.loc[frame[GAP_COLUMN].idxmax()]
    assert worst["ts"] == pd.Timestamp("2010-01-04", tz="UTC") and worst[GAP_COLUMN] >= 255
    # on a 24/7 grid the same file would show ~700 weekend "gaps": the calendar removes them
    gaps = find_gaps(goog, DAY, goog["ts"].min(), goog["ts"].max(), ["GOOG"], cal)
    assert len(gaps) < 10 * 9 and max(g.missing for g in gaps) <= 3  # ~9 holidays a year
    assert len(find_gaps(goog, DAY, goog["ts"].min(), goog["ts"].max(), ["GOOG"])) > 400


def test_real_hourly_fx_bars_have_no_gap_on_the_fx_calendar() -> None:
    eurusd = real_bars("EURUSD.csv")
    frame = bars_frame(eurusd, None, MarketCalendar("fx", HOUR))
    holes = frame[frame[GAP_COLUMN] > 0]
    # only the Christmas and New Year closures (a day each), never a weekend
    assert [str(t.date()) for t in holes["ts"]] == ["2017-12-25", "2018-01-01"]
    assert np.nanmax(frame[GAP_COLUMN]) == 24


def test_observed_bars_per_year_on_real_data() -> None:
    goog = real_bars("GOOG.csv")
    assert 245 < observed_bars_per_year(goog["ts"], goog["symbol"]) < 256  # not 365
    eurusd = real_bars("EURUSD.csv")
    assert 5800 < observed_bars_per_year(eurusd["ts"], eurusd["symbol"]) < 6300  # not 8766
