"""Market calendars: which bar slots a market is expected to fill.

Lookbacks, warm-up and label horizons count *bars of the series* (positions), never
calendar time, so they need no calendar. The calendar answers the questions that are about
time: is a step between two bars a **gap** (expected bars missing) or a closed market
(night, weekend, holiday)?; how much calendar time holds ``n`` bars (to read "the last n
bars" with one bounded query)?; how many bars make a year (to annualize)?

Kinds (``market.calendar``):

* ``always``: around the clock, every slot of ``market.bar_minutes`` is expected (crypto).
* ``fx``: the FX week, Sunday 17:00 to Friday 17:00 New York time (DST included).
* ``weekdays``: Monday to Friday in ``market.timezone``; holidays are not listed, so a
  missing weekday counts as one missing bar (``validation.max_gap_bars`` leaves room for a
  few in a row). Daily bars are labeled by their UTC date, which is the session's date.
* ``sessions``: weekdays, and within each day only ``[market.session[0], session[1])``
  local time (``market.timezone``), for intraday exchange bars.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import time, timedelta
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # numpy and pandas load where a calendar is used, not with the settings
    import numpy as np
    import pandas as pd

CalendarKind = Literal["always", "fx", "weekdays", "sessions"]
CALENDARS: tuple[str, ...] = ("always", "fx", "weekdays", "sessions")
FX_TIMEZONE = "America/New_York"
FX_CLOSE = time(17, 0)  # FX trades from Sunday 17:00 to Friday 17:00 New York time
DAY = timedelta(days=1)
DAYS_PER_YEAR = 365.2425


@dataclass(frozen=True)
class MarketCalendar:
    kind: str
    bar: timedelta
    timezone: str = "UTC"
    session: tuple[time, time] | None = None

    @property
    def daily(self) -> bool:
        return self.bar >= DAY

    def is_open(self, ts: pd.DatetimeIndex | pd.Series) -> np.ndarray:
        """Whether each bar slot (bar open time, UTC) is one the market is expected to fill."""
        import numpy as np
        import pandas as pd

        index = pd.DatetimeIndex(ts)
        if index.tz is None:
            index = index.tz_localize("UTC")
        if self.kind == "always":
            return np.ones(len(index), dtype=bool)
        if self.kind == "fx":
            local = index.tz_convert(FX_TIMEZONE)
            minutes = local.hour.to_numpy() * 60 + local.minute.to_numpy()
            close = FX_CLOSE.hour * 60 + FX_CLOSE.minute
            weekday = local.weekday.to_numpy()
            if self.daily:  # a daily FX bar is labeled by its date: Monday..Friday
                return np.asarray(index.tz_convert("UTC").weekday < 5)
            return np.asarray(
                ((weekday >= 0) & (weekday <= 3))
                | ((weekday == 4) & (minutes < close))
                | ((weekday == 6) & (minutes >= close))
            )
        # weekdays / sessions: daily bars by their UTC date (the session's label)
        local = index.tz_convert("UTC" if self.daily else self.timezone)
        open_ = np.asarray(local.weekday < 5)
        if self.kind == "sessions" and self.session is not None and not self.daily:
            minutes = local.hour.to_numpy() * 60 + local.minute.to_numpy()
            first = self.session[0].hour * 60 + self.session[0].minute
            last = self.session[1].hour * 60 + self.session[1].minute
            open_ &= (minutes >= first) & (minutes < last)
        return open_

    def missing_between(self, previous: pd.Series, current: pd.Series) -> np.ndarray:
        """Expected bar slots strictly between each ``previous`` and ``current`` bar.

        0 for consecutive bars and for a step over a closed market; NaN where ``previous``
        is missing (a symbol's first bar).
        """
        import numpy as np
        import pandas as pd

        prev = pd.to_datetime(previous, utc=True)
        cur = pd.to_datetime(current, utc=True)
        out = np.full(len(cur), np.nan)
        known = prev.notna().to_numpy()
        step = (cur - prev).to_numpy()
        one = np.timedelta64(int(self.bar.total_seconds()), "s")
        consecutive = known & (step <= one)
        out[consecutive] = 0.0
        bar = pd.Timedelta(self.bar)
        for i in np.flatnonzero(known & ~consecutive):
            first, last = prev.iloc[i] + bar, cur.iloc[i] - bar
            slots = pd.date_range(first, last, freq=bar) if last >= first else []
            out[i] = float(self.is_open(pd.DatetimeIndex(slots)).sum()) if len(slots) else 0.0
        return out

    def open_share(self) -> float:
        """Share of bar slots in a (four-week) stretch that the market fills."""
        import pandas as pd

        slots = pd.date_range("2024-01-01", periods=max(1, int(28 * DAY / self.bar)), freq=self.bar)
        return max(float(self.is_open(slots.tz_localize("UTC")).mean()), 1e-6)

    def periods_per_year(self) -> float:
        """Expected bars per year on this calendar (no holidays: an upper bound)."""
        return DAYS_PER_YEAR * (DAY / self.bar) * self.open_share()

    def span_for(self, bars: int) -> timedelta:
        """Calendar time that surely holds ``bars`` expected bars, with room for holidays."""
        needed = bars / self.open_share() * self.bar
        return needed * 1.25 + timedelta(days=10)


def observed_bars_per_year(ts: pd.Series, symbols: pd.Series | None = None) -> float | None:
    """Bars per year as the data has them: per symbol, bars over the years they span (median).

    None when no symbol spans at least 28 days (too short to say).
    """
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"ts": pd.to_datetime(ts, utc=True)})
    frame["symbol"] = "" if symbols is None else np.asarray(symbols)
    rates = []
    for _, group in frame.groupby("symbol"):
        stamps = group["ts"].drop_duplicates()
        span_days = (stamps.max() - stamps.min()) / DAY if len(stamps) > 1 else 0.0
        if span_days >= 28:
            rates.append((len(stamps) - 1) / (span_days / DAYS_PER_YEAR))
    return float(np.median(rates)) if rates else None


def annualization(
    ts: pd.Series, symbols: pd.Series | None, calendar: MarketCalendar
) -> tuple[float, Literal["observed", "calendar"]]:
    """Bars per year to annualize with, and where it came from: ``observed`` in the data,
    else the ``calendar``'s count."""
    observed = observed_bars_per_year(ts, symbols)
    if observed is not None and math.isfinite(observed) and observed > 0:
        return float(observed), "observed"
    return calendar.periods_per_year(), "calendar"


def parse_hhmm(value: str, what: str) -> time:
    try:
        hours, minutes = value.split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError):
        raise ValueError(f"{what}: expected 'HH:MM', got {value!r}") from None
