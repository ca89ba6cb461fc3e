"""Bad input gets a clear error naming file, line and column; good input is normalized."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from signalops.data.bars import BarValidationError, find_gaps, validate_bars
from signalops.data.sources import FileSource, SourceError

HEADER = "symbol,ts,open,high,low,close,volume\n"
GOOD = [
    "AAA,2026-03-01T00:00:00Z,10,11,9,10.5,100",
    "AAA,2026-03-01T00:05:00Z,10.5,11,10,10.8,120",
    "BBB,2026-03-01T00:00:00Z,20,21,19,20.5,50",
]
T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)


def write_csv(tmp_path: Path, rows: list[str], header: str = HEADER) -> Path:
    path = tmp_path / "bars.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    return path


def test_good_csv_is_normalized(tmp_path: Path) -> None:
    bars = FileSource(str(write_csv(tmp_path, GOOD)), "csv").fetch(T0, T1)
    assert list(bars.columns) == ["symbol", "ts", "open", "high", "low", "close", "volume"]
    assert str(bars["ts"].dtype) == "datetime64[ns, UTC]"
    assert bars[["symbol", "ts"]].apply(tuple, axis=1).is_monotonic_increasing
    assert len(bars) == 3


def test_window_and_symbols_filter(tmp_path: Path) -> None:
    source = FileSource(str(write_csv(tmp_path, GOOD)), "csv")
    assert len(source.fetch(T0, T0 + timedelta(minutes=5))) == 2
    assert source.fetch(T0, T1, ["BBB"])["symbol"].tolist() == ["BBB"]


def test_naive_timestamps_are_utc_and_offsets_convert(tmp_path: Path) -> None:
    rows = [
        "AAA,2026-03-01 00:00:00,10,11,9,10.5,100",
        "AAA,2026-03-01T02:05:00+02:00,10,11,9,10.5,100",
    ]
    bars = FileSource(str(write_csv(tmp_path, rows)), "csv").fetch(T0, T1)
    assert bars["ts"].tolist() == [pd.Timestamp(T0), pd.Timestamp(T0 + timedelta(minutes=5))]


@pytest.mark.parametrize(
    ("rows", "header", "expected"),
    [
        (GOOD, "symbol,ts,open,high,close,volume\n", ["missing column(s) ['low']"]),
        (
            [*GOOD[:1], "AAA,not-a-time,10,11,9,10.5,100"],
            HEADER,
            ["column 'ts'", "line 3", "'not-a-time'"],
        ),
        (
            [*GOOD[:2], "BBB,2026-03-01T00:00:00Z,20,19,21,20,50"],
            HEADER,
            ["column 'high'", "high < low", "line 4"],
        ),
        (
            ["AAA,2026-03-01T00:00:00Z,10,11,9,10.5,-1"],
            HEADER,
            ["column 'volume'", "negative volume", "line 2"],
        ),
        ([*GOOD, GOOD[0]], HEADER, ["duplicate (symbol, ts)", "line 2", "line 5"]),
        (
            ["AAA,2026-03-01T00:00:00Z,10,eleven,9,10.5,100"],
            HEADER,
            ["column 'high'", "not a finite number", "'eleven'"],
        ),
        (["AAA,2026-03-01T00:00:00Z,10,11,9,,100"], HEADER, ["column 'close'", "line 2"]),
        (
            ["AAA,2026-03-01T00:00:00Z,10,10.2,9,10.5,100"],
            HEADER,
            ["high below open or close", "line 2"],
        ),
        ([",2026-03-01T00:00:00Z,10,11,9,10.5,100"], HEADER, ["column 'symbol'", "empty symbol"]),
    ],
    ids=[
        "missing-column",
        "bad-ts",
        "high-below-low",
        "negative-volume",
        "duplicate",
        "not-number",
        "empty-close",
        "high-below-close",
        "empty-symbol",
    ],
)
def test_bad_csv_names_file_line_and_column(
    tmp_path: Path, rows: list[str], header: str, expected: list[str]
) -> None:
    path = write_csv(tmp_path, rows, header)
    with pytest.raises(BarValidationError) as err:
        FileSource(str(path), "csv").fetch(T0, T1)
    message = str(err.value)
    assert str(path) in message
    assert "nothing was written" in message
    for text in expected:
        assert text in message, message


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    rows = [
        "AAA,oops,10,11,9,10.5,1",
        "AAA,2026-03-01T00:05:00Z,10,x,9,10.5,1",
        ",2026-03-01T00:10:00Z,1,1,1,1,1",
    ]
    with pytest.raises(BarValidationError) as err:
        FileSource(str(write_csv(tmp_path, rows)), "csv").fetch(T0, T1)
    columns = sorted(p.split("'")[1] for p in err.value.problems)
    assert columns == ["high", "symbol", "ts"]


def test_parquet_source_and_row_numbers(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "symbol": ["AAA", "AAA"],
            "ts": pd.to_datetime(["2026-03-01T00:00Z", "2026-03-01T00:05Z"]),
            "open": [1.0, 1.0],
            "high": [1.1, 0.5],
            "low": [0.9, 0.9],
            "close": [1.0, 1.0],
            "volume": [1.0, 1.0],
        }
    )
    (tmp_path / "d").mkdir()
    frame.to_parquet(tmp_path / "d" / "a.parquet")
    with pytest.raises(BarValidationError, match=r"row 2"):
        FileSource(str(tmp_path / "d"), "parquet").fetch(T0, T1)


def test_duplicates_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    for name in ("a.csv", "b.csv"):
        (tmp_path / "d" / name).write_text(HEADER + GOOD[0] + "\n")
    with pytest.raises(BarValidationError, match="across files"):
        FileSource(str(tmp_path / "d"), "csv").fetch(T0, T1)


def test_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no csv file found"):
        FileSource(str(tmp_path / "none.csv"), "csv").fetch(T0, T1)


def test_gaps_are_reported_not_invented(tmp_path: Path) -> None:
    rows = [f"AAA,2026-03-01T00:{m:02d}:00Z,10,11,9,10.5,100" for m in (0, 5, 20, 25)]
    bars = FileSource(str(write_csv(tmp_path, rows)), "csv").fetch(T0, T0 + timedelta(minutes=40))
    assert len(bars) == 4  # nothing filled in
    gaps = find_gaps(bars, timedelta(minutes=5), T0, T0 + timedelta(minutes=40), ["AAA", "BBB"])
    described = sorted((g.symbol, g.first_missing.minute, g.missing) for g in gaps)
    assert described == [("AAA", 10, 2), ("AAA", 30, 2), ("BBB", 0, 8)]


def test_validate_accepts_synthetic_output(bars: pd.DataFrame) -> None:
    checked = validate_bars(bars, "synthetic")
    assert len(checked) == len(bars)
