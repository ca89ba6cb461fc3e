"""Time windows: parse and check the ``[start, end)`` a task works on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from signalops.errors import BadInputError


class WindowError(BadInputError):
    """A window parameter is unparsable, or start is not before end."""


def parse_ts(value: Any, what: str) -> datetime:
    """An ISO-8601 string or datetime as an aware UTC datetime (naive means UTC)."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise WindowError(f"{what}: cannot parse {value!r} as a timestamp ({exc})") from None
    if ts is pd.NaT:
        raise WindowError(f"{what}: empty timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def resolve_window(
    start: Any, end: Any, default_start: Any = None, default_end: Any = None, what: str = "window"
) -> tuple[datetime, datetime]:
    """Explicit ``start``/``end`` (e.g. DAG params) over defaults (e.g. the data interval)."""
    start = start if start not in (None, "") else default_start
    end = end if end not in (None, "") else default_end
    if start is None or end is None:
        raise WindowError(
            f"{what}: both start and end are needed (got start={start!r}, end={end!r})"
        )
    s, e = parse_ts(start, f"{what} start"), parse_ts(end, f"{what} end")
    if s >= e:
        raise WindowError(f"{what}: start {s.isoformat()} is not before end {e.isoformat()}")
    return s, e


def window_from_extras(extras: Iterable[Mapping[str, Any]]) -> tuple[datetime, datetime] | None:
    """The union of the ``start``/``end`` windows carried by Asset events, if any."""
    windows = [
        (parse_ts(x["start"], "asset event start"), parse_ts(x["end"], "asset event end"))
        for x in extras
        if x.get("start") and x.get("end")
    ]
    if not windows:
        return None
    return min(w[0] for w in windows), max(w[1] for w in windows)


def utc_days(start: datetime, end: datetime) -> list[date]:
    """The UTC calendar days that ``[start, end)`` touches."""
    last = end - timedelta(microseconds=1)
    return [d.date() for d in pd.date_range(start.date(), last.date(), freq="D")]
