"""The warehouse database: one SQLAlchemy Core metadata declares every table.

SQLite (embedded default) and PostgreSQL (production) behave the same. Timestamps are
stored in UTC (``timestamptz`` on PostgreSQL, UTC text on SQLite) and come back as
timezone-aware pandas timestamps. ``create_all`` is idempotent; every writer upserts on
its table's key, so re-running a task for the same interval leaves the same rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from signalops.data.bars import BAR_COLUMNS, NUMERIC_COLUMNS, empty_bars

log = logging.getLogger(__name__)

metadata = sa.MetaData()

bars_table = sa.Table(
    "bars",
    metadata,
    sa.Column("symbol", sa.String(64), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), primary_key=True),
    *(sa.Column(c, sa.Float(53), nullable=False) for c in NUMERIC_COLUMNS),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
)

online_features_table = sa.Table(
    "online_features",
    metadata,
    sa.Column("feature_set_version", sa.String(32), primary_key=True),
    sa.Column("symbol", sa.String(64), primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

predictions_table = sa.Table(
    "predictions",
    metadata,
    # Key: one row per (request, batch row, model that scored it): an ensemble's members and
    # a shadow challenger each get their own row; replays after an outage never duplicate.
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("row_index", sa.Integer, primary_key=True),  # position in a batch request
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),  # champion | challenger | shadow
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("symbol", sa.String(64), nullable=True, index=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("features_hash", sa.String(32), nullable=False),
    sa.Column("features_ts", sa.DateTime(timezone=True), nullable=True),
    sa.Column("probability", sa.Float(53), nullable=False),
    sa.Column("signal", sa.String(8), nullable=False),  # BUY | SELL | HOLD
    sa.Column("risk_decision", sa.String(256), nullable=False),
    sa.Column("latency_ms", sa.Float(53), nullable=False),
)

# The drift monitor's checks: one row per (signal, model version, window start, window
# end), rewritten when the same window is checked again (windows of different lengths that
# end together are different rows), plus one row per feature.
drift_checks_table = sa.Table(
    "drift_checks",
    metadata,
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_bars", sa.Integer, nullable=True),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("calibrated", sa.Boolean, nullable=True),  # severity from null critical values
    sa.Column("severity", sa.String(8), nullable=False),  # none | low | medium | high
    sa.Column("share_drifted", sa.Float(53), nullable=False),
    sa.Column("prediction_psi", sa.Float(53), nullable=True),
    sa.Column("accuracy", sa.Float(53), nullable=True),
    sa.Column("holdout_accuracy", sa.Float(53), nullable=True),
    sa.Column("matured_rows", sa.Integer, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("recommendations", sa.JSON, nullable=False),
    sa.Column("alerted", sa.Boolean, nullable=False),
    sa.Column("report_path", sa.String(1024), nullable=True),
)

drift_features_table = sa.Table(
    "drift_features",
    metadata,
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("window_start", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("window_end", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("feature", sa.String(128), primary_key=True),
    sa.Column("psi", sa.Float(53), nullable=False),
    sa.Column("ks_statistic", sa.Float(53), nullable=False),
    sa.Column("ks_p_value", sa.Float(53), nullable=False),
    sa.Column("wasserstein", sa.Float(53), nullable=False),
    # the null critical values at the window's size (none: an uncalibrated profile)
    sa.Column("psi_critical", sa.Float(53), nullable=True),
    sa.Column("ks_critical", sa.Float(53), nullable=True),
    sa.Column("wasserstein_critical", sa.Float(53), nullable=True),
    sa.Column("severity", sa.String(16), nullable=False),  # none | moderate | significant
    sa.Column("drifted", sa.Boolean, nullable=False),
)

# Realized labels of logged predictions (key: the prediction's key), from the bars, with
# the training label's definition: close H bars after the features' bar vs its close.
outcomes_table = sa.Table(
    "outcomes",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("row_index", sa.Integer, primary_key=True),
    sa.Column("signal_name", sa.String(128), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("symbol", sa.String(64), nullable=False),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),  # prediction time
    sa.Column("features_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("probability", sa.Float(53), nullable=False),
    sa.Column("signal", sa.String(8), nullable=False),
    sa.Column("label_up", sa.Integer, nullable=False),
    sa.Column("label_return", sa.Float(53), nullable=False),
    sa.Column("matured_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
)

# Canary rollouts: one active row per signal at most; every transition is in ``history``.
rollouts_table = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("signal_name", sa.String(128), nullable=False, index=True),
    sa.Column("champion_version", sa.String(32), nullable=True),
    sa.Column("challenger_version", sa.String(32), nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("weight", sa.Float(53), nullable=False),
    # active | promoting | promoted | rolling_back | rolled_back | superseded | manual
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("history", sa.JSON, nullable=False),
)

# Every alert, by dedup key (signalops.alerts.ledger): one row per key, its latest outcome
# (sending | sent | failed | suppressed), when it was last delivered and how often it came.
alerts_table = sa.Table(
    "alerts",
    metadata,
    sa.Column("dedup_key", sa.String(256), primary_key=True),
    sa.Column("kind", sa.String(64), nullable=False, index=True),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("title", sa.String(512), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_sent", sa.DateTime(timezone=True), nullable=True),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),  # a send in flight
    sa.Column("channel", sa.String(16), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
)

# The signalops DAGs' finished runs, written by their DAG-level callbacks: a run of failures
# as long as the DAG's max_consecutive_failed_dag_runs means Airflow paused it.
dag_runs_table = sa.Table(
    "dag_runs",
    metadata,
    sa.Column("dag_id", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, index=True),
)

UPSERT_CHUNK = 2_000


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int

    @property
    def written(self) -> int:
        return self.inserted + self.updated


class Warehouse:
    """A handle on the warehouse database (create one per task; it owns an engine)."""

    def __init__(self, url: str):
        self.url = url
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            database = self.engine.url.database
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def create_all(self) -> None:
        self._rebuild_outdated_drift_tables()
        metadata.create_all(self.engine)

    def _rebuild_outdated_drift_tables(self) -> None:
        """Drift checks are derived data (a rerun of the monitor recomputes them): tables of an
        older schema (keyed by window end only) are dropped, to be created anew."""
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(drift_checks_table.name):
            return
        columns = {c["name"] for c in inspector.get_columns(drift_checks_table.name)}
        if set(drift_checks_table.c.keys()) <= columns:
            return
        log.warning(
            "warehouse: drift_checks/drift_features have an older schema (%s missing): "
            "dropped and created anew; rerun drift_monitor for past windows if needed",
            sorted(set(drift_checks_table.c.keys()) - columns),
        )
        for table in (drift_features_table, drift_checks_table):
            table.drop(self.engine, checkfirst=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()

    def insert(self, table: sa.Table) -> Any:
        """A dialect-specific INSERT that supports ON CONFLICT."""
        module = postgresql if self.dialect == "postgresql" else sqlite
        if self.dialect not in ("postgresql", "sqlite"):
            raise NotImplementedError(f"warehouse dialect {self.dialect!r} is not supported")
        return module.insert(table)

    # -- bars -------------------------------------------------------------------------------

    def upsert_bars(self, bars: pd.DataFrame, source: str) -> UpsertResult:
        """Insert new bars, overwrite changed ones (late corrections), leave equal ones alone.

        Runs in one transaction: either the whole batch lands or nothing does.
        """
        if bars.empty:
            return UpsertResult(0, 0, 0)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            existing = self._read_bars(
                conn,
                sorted(bars["symbol"].unique()),
                bars["ts"].min(),
                bars["ts"].max(),
                inclusive=True,
            )
            merged = bars.merge(
                existing, on=["symbol", "ts"], how="left", suffixes=("", "_old"), indicator=True
            )
            is_new = (merged["_merge"] == "left_only").to_numpy()
            same = np.ones(len(merged), dtype=bool)
            for c in NUMERIC_COLUMNS:
                same &= merged[c].to_numpy() == merged[f"{c}_old"].to_numpy()
            changed = ~is_new & ~same
            todo = merged.loc[is_new | changed, list(BAR_COLUMNS)]
            rows = _records(todo, source=source, ingested_at=now)
            stmt = self.insert(bars_table)
            stmt = stmt.on_conflict_do_update(
                index_elements=["symbol", "ts"],
                set_={c: stmt.excluded[c] for c in (*NUMERIC_COLUMNS, "source", "ingested_at")},
            )
            for i in range(0, len(rows), UPSERT_CHUNK):
                conn.execute(stmt, rows[i : i + UPSERT_CHUNK])
        result = UpsertResult(int(is_new.sum()), int(changed.sum()), int((~is_new & same).sum()))
        log.info(
            "bars upsert: %d inserted, %d updated (late corrections), %d unchanged",
            result.inserted,
            result.updated,
            result.unchanged,
        )
        return result

    def read_bars(
        self, symbols: list[str] | None, start: datetime | None = None, end: datetime | None = None
    ) -> pd.DataFrame:
        """Bars with ``start <= ts < end`` (open bounds when None), sorted by symbol and ts."""
        with self.engine.connect() as conn:
            return self._read_bars(conn, symbols, start, end)

    def _read_bars(
        self,
        conn: sa.Connection,
        symbols: list[str] | None,
        start: datetime | pd.Timestamp | None,
        end: datetime | pd.Timestamp | None,
        inclusive: bool = False,
    ) -> pd.DataFrame:
        t = bars_table
        query = sa.select(*(t.c[c] for c in BAR_COLUMNS)).order_by(t.c.symbol, t.c.ts)
        if symbols:
            query = query.where(t.c.symbol.in_(list(symbols)))
        if start is not None:
            query = query.where(t.c.ts >= _utc(start))
        if end is not None:
            query = query.where(t.c.ts <= _utc(end) if inclusive else t.c.ts < _utc(end))
        rows = conn.execute(query).all()
        if not rows:
            return empty_bars()
        frame = pd.DataFrame(rows, columns=list(BAR_COLUMNS))
        frame["ts"] = to_utc_series(frame["ts"])
        for c in NUMERIC_COLUMNS:
            frame[c] = frame[c].astype("float64")
        return frame

    def read_bars_around(
        self, symbols: list[str], start: datetime, end: datetime, before: int, after: int
    ) -> pd.DataFrame:
        """Each symbol's bars in ``[start, end)`` plus its ``before`` bars before ``start``
        and its ``after`` bars from ``end`` on: lookbacks counted in bars of the series,
        whatever the calendar (weekends, holidays, sessions) puts between them."""
        t = bars_table
        frames = []
        with self.engine.connect() as conn:
            for symbol in symbols:
                lower = _utc(start)
                if before > 0:
                    first = conn.execute(
                        sa.select(t.c.ts)
                        .where(t.c.symbol == symbol, t.c.ts < _utc(start))
                        .order_by(t.c.ts.desc())
                        .limit(before)
                    ).all()
                    if first:
                        lower = _utc(to_utc_series(pd.Series([first[-1][0]])).iloc[0])
                upper, inclusive = _utc(end), False
                if after > 0:
                    last = conn.execute(
                        sa.select(t.c.ts)
                        .where(t.c.symbol == symbol, t.c.ts >= _utc(end))
                        .order_by(t.c.ts)
                        .limit(after)
                    ).all()
                    if last:
                        upper = _utc(to_utc_series(pd.Series([last[-1][0]])).iloc[0])
                        inclusive = True
                frames.append(self._read_bars(conn, [symbol], lower, upper, inclusive=inclusive))
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else empty_bars()

    def bars_before(self, symbols: list[str], before: datetime, count: int) -> dict[str, Any]:
        """Per symbol: how many bars precede ``before`` (up to ``count``) and the first bar's ts."""
        t = bars_table
        out: dict[str, Any] = {}
        with self.engine.connect() as conn:
            for symbol in symbols:
                n = conn.execute(
                    sa.select(sa.func.count()).where(t.c.symbol == symbol, t.c.ts < _utc(before))
                ).scalar()
                first = conn.execute(
                    sa.select(sa.func.min(t.c.ts)).where(t.c.symbol == symbol)
                ).scalar()
                out[symbol] = {
                    "bars": int(n or 0),
                    "first_ts": None
                    if first is None
                    else to_utc_series(pd.Series([first])).iloc[0].isoformat(),
                }
        return out

    def bar_stats(self) -> pd.DataFrame:
        """Per symbol: number of bars, first and last ts."""
        t = bars_table
        query = (
            sa.select(
                t.c.symbol,
                sa.func.count().label("bars"),
                sa.func.min(t.c.ts).label("first_ts"),
                sa.func.max(t.c.ts).label("last_ts"),
            )
            .group_by(t.c.symbol)
            .order_by(t.c.symbol)
        )
        with self.engine.connect() as conn:
            frame = pd.DataFrame(
                conn.execute(query).all(), columns=["symbol", "bars", "first_ts", "last_ts"]
            )
        for c in ("first_ts", "last_ts"):
            frame[c] = to_utc_series(frame[c])
        return frame

    def previous_bar_ts(self, symbols: list[str], before: datetime) -> dict[str, pd.Timestamp]:
        """Each symbol's newest bar strictly before ``before`` (symbols without one: absent)."""
        t = bars_table
        query = (
            sa.select(t.c.symbol, sa.func.max(t.c.ts))
            .where(t.c.symbol.in_(symbols), t.c.ts < _utc(before))
            .group_by(t.c.symbol)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).fetchall()
        if not rows:
            return {}
        stamps = to_utc_series(pd.Series([r[1] for r in rows]))
        return {str(r[0]): stamps.iloc[i] for i, r in enumerate(rows)}

    def last_bar_ts(self) -> pd.Timestamp | None:
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(sa.func.max(bars_table.c.ts))).scalar()
        return None if value is None else to_utc_series(pd.Series([value])).iloc[0]


def to_utc_series(values: pd.Series) -> pd.Series:
    """Database timestamps (aware from PostgreSQL, naive UTC text from SQLite) to UTC."""
    parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    return parsed.astype("datetime64[ns, UTC]")


def _utc(value: datetime | pd.Timestamp) -> datetime:
    ts = pd.Timestamp(value)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _records(frame: pd.DataFrame, **extra: Any) -> list[dict[str, Any]]:
    out = frame.astype({"ts": "object"}).copy()
    out["ts"] = [ts.to_pydatetime() for ts in frame["ts"]]
    records: list[dict[str, Any]] = out.to_dict("records")
    for record in records:
        record.update(extra)
    return records


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the Airflow UI and a running task read while another task writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
