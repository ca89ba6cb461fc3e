"""The offline feature store: Parquet under the lake, one file per (version, symbol, day).

Layout (hive-style, so pyarrow and DuckDB read it with partition filters)::

    <lake>/features/feature_set=v1/_spec.json
    <lake>/features/feature_set=v1/symbol=BTC-USD/date=2026-09-01/part-0.parquet

A day file is always rewritten whole, through a temporary file and an atomic rename, so
readers never see half a file and re-running a day replaces it with the same rows.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from signalops.features.definitions import FeatureSet
from signalops.files import atomic_write_bytes, atomic_write_table

PART_FILE = "part-0.parquet"
SPEC_FILE = "_spec.json"


@dataclass(frozen=True)
class DayFile:
    symbol: str
    day: date
    path: Path
    rows: int


def _sorted_by_symbol_ts(frame: pd.DataFrame) -> bool:
    symbol = frame["symbol"].to_numpy()
    ts = pd.DatetimeIndex(frame["ts"]).asi8  # int64 ns; to_numpy would box tz-aware values
    same = symbol[1:] == symbol[:-1]
    return bool((symbol[1:] >= symbol[:-1]).all() and (ts[1:][same] > ts[:-1][same]).all())


class OfflineStore:
    def __init__(self, lake_dir: Path):
        self.root = Path(lake_dir) / "features"

    def version_dir(self, version: str) -> Path:
        return self.root / f"feature_set={version}"

    def day_path(self, version: str, symbol: str, day: date) -> Path:
        return (
            self.version_dir(version) / f"symbol={symbol}" / f"date={day.isoformat()}" / PART_FILE
        )

    def write_spec(self, feature_set: FeatureSet, horizon_bars: int) -> Path:
        path = self.version_dir(feature_set.version) / SPEC_FILE
        atomic_write_bytes(path, json.dumps(feature_set.spec(horizon_bars), indent=2).encode())
        return path

    def read_spec(self, version: str) -> dict[str, Any]:
        return dict(json.loads((self.version_dir(version) / SPEC_FILE).read_text()))

    def write_day(self, version: str, day: date, frame: pd.DataFrame) -> list[DayFile]:
        """Replace the files of ``day`` with ``frame`` (rows of that UTC day, any symbols)."""
        written = []
        for symbol, group in frame.groupby("symbol", sort=True):
            rows = group.drop(columns=["symbol"]).sort_values("ts").reset_index(drop=True)
            path = self.day_path(version, str(symbol), day)
            atomic_write_table(path, pa.Table.from_pandas(rows, preserve_index=False))
            written.append(DayFile(str(symbol), day, path, len(rows)))
        return written

    def read(
        self,
        version: str,
        symbols: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Rows with ``start <= ts < end``; ``symbol`` and ``ts`` always come back first."""
        files = self.files(version, symbols, start, end)
        if not files:
            return pd.DataFrame(columns=["symbol", "ts", *(columns or [])])
        cols = (
            None if columns is None else ["ts", *[c for c in columns if c not in ("symbol", "ts")]]
        )

        def load(item: tuple[str, Path]) -> pa.Table:
            symbol, path = item
            table = pq.ParquetFile(path).read(columns=cols, use_threads=False)
            return table.add_column(0, "symbol", pa.array([symbol] * table.num_rows, pa.string()))

        # Many small day files: one reader thread per core (parquet decoding releases the
        # GIL), plain ParquetFile reads (read_table's dataset discovery costs ~3 ms a file),
        # one conversion to pandas at the end.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            tables = list(pool.map(load, files))
        result = pa.concat_tables(tables, promote_options="default").to_pandas()
        keep = np.ones(len(result), dtype=bool)
        if start is not None:
            keep &= (result["ts"] >= pd.Timestamp(start)).to_numpy()
        if end is not None:
            keep &= (result["ts"] < pd.Timestamp(end)).to_numpy()
        if not keep.all():
            result = result[keep].reset_index(drop=True)
        # files() lists symbols, then days, in order, and a day file is sorted by ts: the
        # concatenation is already in (symbol, ts) order unless a file was edited by hand.
        if not _sorted_by_symbol_ts(result):
            result = result.sort_values(["symbol", "ts"], kind="stable").reset_index(drop=True)
        return result

    def files(
        self,
        version: str,
        symbols: list[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[tuple[str, Path]]:
        base = self.version_dir(version)
        if not base.is_dir():
            return []
        first = pd.Timestamp(start).date() if start is not None else None
        last = pd.Timestamp(end).date() if end is not None else None
        found = []
        for symbol_dir in sorted(base.glob("symbol=*")):
            symbol = symbol_dir.name.split("=", 1)[1]
            if symbols and symbol not in symbols:
                continue
            for day_dir in sorted(symbol_dir.glob("date=*")):
                day = date.fromisoformat(day_dir.name.split("=", 1)[1])
                if (first and day < first) or (last and day > last):
                    continue
                path = day_dir / PART_FILE
                if path.is_file():
                    found.append((symbol, path))
        return found

    def latest(self, version: str, symbols: list[str] | None = None) -> pd.DataFrame:
        """The newest row per symbol (read from each symbol's newest day file only)."""
        newest: dict[str, Path] = {}
        for symbol, path in self.files(version, symbols):
            newest[symbol] = path  # files() is sorted by day within a symbol
        frames = []
        for symbol, path in newest.items():
            part = pq.read_table(path).to_pandas()
            row = part.iloc[[-1]].copy()
            row.insert(0, "symbol", symbol)
            frames.append(row)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
