from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from signalops.windows import WindowError, parse_ts, resolve_window, utc_days, window_from_extras

T0 = datetime(2026, 10, 1, tzinfo=UTC)
T1 = datetime(2026, 10, 1, 1, tzinfo=UTC)


def test_params_override_the_data_interval() -> None:
    assert resolve_window(None, "", T0, T1) == (T0, T1)
    assert resolve_window("2026-10-01T00:30:00+00:00", None, T0, T1)[0] == datetime(
        2026, 10, 1, 0, 30, tzinfo=UTC
    )
    assert resolve_window("2026-10-01T02:00:00+02:00", "2026-10-01T01:00:00Z") == (T0, T1)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-10-02T00:00:00Z", "2026-10-01T00:00:00Z", "is not before end"),
        ("yesterday", "2026-10-01T00:00:00Z", "cannot parse 'yesterday'"),
        (None, "2026-10-01T00:00:00Z", "both start and end are needed"),
    ],
)
def test_bad_windows_say_what_is_wrong(start: str | None, end: str, message: str) -> None:
    with pytest.raises(WindowError, match=message):
        resolve_window(start, end, what="market_data")


def test_window_from_asset_event_extras() -> None:
    extras = [
        {"start": "2026-10-01T01:00:00+00:00", "end": "2026-10-01T02:00:00+00:00", "rows": 60},
        {"start": "2026-10-01T00:00:00+00:00", "end": "2026-10-01T01:00:00+00:00"},
        {"rows": 3},  # an event without a window (e.g. emitted by hand) is ignored
    ]
    assert window_from_extras(extras) == (T0, datetime(2026, 10, 1, 2, tzinfo=UTC))
    assert window_from_extras([{}]) is None


def test_naive_is_utc_and_days() -> None:
    assert parse_ts("2026-10-01 00:00", "x") == T0
    assert utc_days(datetime(2026, 9, 30, 23, tzinfo=UTC), T1) == [
        date(2026, 9, 30),
        date(2026, 10, 1),
    ]
    assert utc_days(T0, datetime(2026, 10, 2, tzinfo=UTC)) == [date(2026, 10, 1)]
