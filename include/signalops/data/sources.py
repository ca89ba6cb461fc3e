"""Market data sources behind one small interface: ``fetch(start, end, symbols) -> bars``.

Every source returns bars validated by :func:`signalops.data.bars.validate_bars`, so a bad
file or query fails before anything is written, with the file, line and column named.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pandas as pd
import sqlalchemy as sa

from signalops.config import Settings
from signalops.data.bars import BAR_COLUMNS, BarValidationError, empty_bars, validate_bars
from signalops.data.synthetic import SyntheticSource


class BarSource(Protocol):
    @property
    def name(self) -> str: ...

    def fetch(
        self, start: datetime, end: datetime, symbols: list[str] | None = None
    ) -> pd.DataFrame: ...


class SourceError(RuntimeError):
    """A source cannot be read at all (missing file, unreachable database, bad query)."""


def _window(
    bars: pd.DataFrame, start: datetime, end: datetime, symbols: list[str] | None
) -> pd.DataFrame:
    mask = (bars["ts"] >= pd.Timestamp(start)) & (bars["ts"] < pd.Timestamp(end))
    if symbols:
        mask &= bars["symbol"].isin(symbols)
    return bars.loc[mask].reset_index(drop=True)


@dataclass(frozen=True)
class FileSource:
    """CSV or Parquet files: one file, a directory of them, or a glob pattern.

    A file without a ``symbol`` column holds one symbol, named by the file (``GOOG.csv``:
    ``GOOG``); its time column may be ``ts``, ``timestamp``, ``datetime``, ``date``,
    ``time`` or an unnamed index column.

    The whole file is validated (not only the requested window), so a broken row is
    reported even when it lies outside the interval being collected.
    """

    path: str
    fmt: str  # "csv" or "parquet"

    @property
    def name(self) -> str:
        return self.fmt

    def files(self) -> list[Path]:
        base = Path(self.path)
        if base.is_dir():
            found = sorted(base.rglob(f"*.{self.fmt}"))
        elif any(ch in self.path for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(self.path, recursive=True))
        else:
            found = [base] if base.is_file() else []
        if not found:
            raise SourceError(f"no {self.fmt} file found at {self.path}")
        return found

    def fetch(
        self, start: datetime, end: datetime, symbols: list[str] | None = None
    ) -> pd.DataFrame:
        frames = [self._read(path) for path in self.files()]
        bars = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        duplicated = bars.duplicated(["symbol", "ts"], keep=False)
        if duplicated.any():
            first = bars.loc[duplicated].iloc[0]
            raise BarValidationError(
                self.path,
                [
                    f"duplicate (symbol, ts) across files: {int(duplicated.sum())} rows, "
                    f"e.g. {first['symbol']}@{first['ts'].isoformat()}"
                ],
            )
        return _window(bars, start, end, symbols)

    def _read(self, path: Path) -> pd.DataFrame:
        try:
            if self.fmt == "csv":
                # Read as text so that validation, not the parser, reports bad values by line.
                raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
                # Line 1 is the header, so row i (0-based) is on line i + 2.
                return validate_bars(raw, str(path), lambda i: f"line {i + 2}", path.stem)
            raw = pd.read_parquet(path)
        except BarValidationError:
            raise
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read {path}: {exc}") from exc
        return validate_bars(raw, str(path), lambda i: f"row {i + 1}", path.stem)


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class PostgresSource:
    """A table (with the bar columns) or a query with ``:start`` and ``:end`` parameters."""

    url: str
    table: str | None = None
    query: str | None = None
    name = "postgres"

    def statement(self) -> sa.TextClause:
        if self.query:
            missing = [p for p in (":start", ":end") if p not in self.query]
            if missing:
                raise SourceError(f"market.postgres_query must use bind parameter(s) {missing}")
            return sa.text(self.query)
        if not self.table or not _IDENTIFIER.match(self.table):
            raise SourceError(f"market.postgres_table {self.table!r} is not a table name")
        columns = ", ".join(BAR_COLUMNS)
        return sa.text(
            f"SELECT {columns} FROM {self.table} "  # the name was checked against _IDENTIFIER
            "WHERE ts >= :start AND ts < :end ORDER BY symbol, ts"
        )

    def fetch(
        self, start: datetime, end: datetime, symbols: list[str] | None = None
    ) -> pd.DataFrame:
        statement = self.statement()
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                raw = pd.read_sql(statement, conn, params={"start": start, "end": end})
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(
                f"postgres source query failed: {exc.__class__.__name__}: {exc}"
            ) from exc
        finally:
            engine.dispose()
        where = self.table or "postgres_query"
        bars = validate_bars(raw, where, lambda i: f"result row {i + 1}")
        return _window(bars, start, end, symbols)


def source_from_settings(settings: Settings) -> BarSource:
    market = settings.market
    if market.source == "synthetic":
        syn = market.synthetic
        return SyntheticSource(
            symbols=market.symbols,
            bar=market.bar,
            seed=syn.seed,
            origin=syn.origin,
            regime_bars=syn.regime_bars,
            shift_at=syn.shift_at,
            shift_volatility_factor=syn.shift_volatility_factor,
            shift_drift=syn.shift_drift,
            shift_volume_factor=syn.shift_volume_factor,
            trend_strength=syn.trend_strength,
            trend_bars=syn.trend_bars,
        )
    if market.source in ("csv", "parquet"):
        assert market.path is not None  # checked by the settings
        return FileSource(market.path, market.source)
    assert market.postgres_url is not None
    return PostgresSource(market.postgres_url, market.postgres_table, market.postgres_query)
