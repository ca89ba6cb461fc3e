"""Training data: labeled rows from the offline store, and leakage-safe time splits.

Splits are by time, never by row: several symbols share a timestamp, and a row's label
looks ``H`` bars ahead, so every split drops (purges) the rows whose label window would
reach into the block that follows. The look-ahead is counted in bars of the symbol's
series (a Friday's 5-bar label ends the next Friday), never as ``H`` times the bar length.
The out-of-time holdout is the newest block; it is used for evaluation only, never for
fitting or choosing the number of trees.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from signalops.alerts import Alert
from signalops.config import Settings
from signalops.errors import BadInputError
from signalops.features.definitions import LABEL_RETURN, LABEL_UP, get_feature_set
from signalops.features.offline_store import OfflineStore

log = logging.getLogger(__name__)
END_OF_TIME = np.datetime64("2262-01-01", "ns")


class InsufficientDataError(BadInputError):
    """Too few labeled rows to train on; ``alert`` is ready to send."""

    def __init__(self, rows: int, minimum: int, where: str):
        self.rows, self.minimum = rows, minimum
        super().__init__(
            f"refusing to train: {rows} labeled rows in {where}, the minimum is {minimum} "
            "(training.min_rows); collect more history or widen the window"
        )
        self.alert = Alert(
            title="signalops retrain skipped: too little data",
            text=str(self),
            severity="warning",
            fields={"rows": str(rows), "minimum": str(minimum), "window": where},
        )


@dataclass(frozen=True)
class Dataset:
    frame: pd.DataFrame  # symbol, ts, features..., label_return, label_up; sorted by ts, symbol
    feature_names: list[str]
    feature_set_version: str
    horizon_bars: int
    bar: timedelta
    snapshot_hash: str

    @property
    def x(self) -> np.ndarray:
        return self.frame[self.feature_names].to_numpy(dtype=np.float32)

    @property
    def y(self) -> np.ndarray:
        return self.frame[LABEL_UP].to_numpy(dtype=np.float32)

    @property
    def ts(self) -> np.ndarray:
        """Row times as naive-UTC ``datetime64[ns]`` (fast to compare and offset)."""
        ts = pd.to_datetime(self.frame["ts"], utc=True)
        return ts.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")

    @property
    def label_end(self) -> np.ndarray:
        """When each row's label is known: the time of its symbol's H-th next bar (rows whose
        H-th bar lies past the dataset: the end of time, so no later block trains on them)."""
        ts = pd.Series(self.ts)
        later = ts.groupby(self.frame["symbol"].to_numpy()).shift(-self.horizon_bars)
        return later.fillna(END_OF_TIME).to_numpy(dtype="datetime64[ns]")


def assemble_dataset(
    settings: Settings,
    start: datetime,
    end: datetime,
    symbols: list[str] | None = None,
    version: str | None = None,
) -> Dataset:
    """Labeled rows with ``start <= ts < end`` from the offline store."""
    feature_set = get_feature_set(version or settings.features.feature_set_version)
    frame = OfflineStore(settings.lake_dir).read(
        feature_set.version, list(symbols or settings.market.symbols), start, end
    )
    where = f"feature set {feature_set.version}, {start.isoformat()} .. {end.isoformat()}"
    if frame.empty:
        raise InsufficientDataError(0, settings.training.min_rows, where)
    missing = [n for n in feature_set.names if n not in frame.columns]
    if missing:
        raise BadInputError(f"offline store for {feature_set.version} lacks features {missing}")
    columns = ["symbol", "ts", *feature_set.names, LABEL_RETURN, LABEL_UP]
    labeled = frame.loc[frame[LABEL_UP].notna().to_numpy(), columns]
    labeled = labeled.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)
    if len(labeled) < settings.training.min_rows:
        raise InsufficientDataError(len(labeled), settings.training.min_rows, where)
    digest = hashlib.sha256()
    digest.update(feature_set.version.encode())
    digest.update(pd.util.hash_pandas_object(labeled, index=False).to_numpy().tobytes())
    dataset = Dataset(
        labeled,
        feature_set.names,
        feature_set.version,
        settings.features.horizon_bars,
        settings.market.bar,
        digest.hexdigest()[:16],
    )
    log.info(
        "dataset: %d labeled rows, %d symbols, %s .. %s, up share %.3f, snapshot %s",
        len(labeled),
        labeled["symbol"].nunique(),
        labeled["ts"].min(),
        labeled["ts"].max(),
        float(labeled[LABEL_UP].mean()),
        dataset.snapshot_hash,
    )
    return dataset


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row positions
    valid: np.ndarray


def _label_end(ts: np.ndarray, purge: np.timedelta64 | np.ndarray) -> np.ndarray:
    """Per-row label end times: given (``Dataset.label_end``), or ``ts`` plus a fixed span."""
    if isinstance(purge, np.ndarray) and purge.dtype.kind == "M":
        return purge
    return ts + purge


def holdout_split(ts: np.ndarray, fraction: float, purge: np.timedelta64 | np.ndarray) -> Split:
    """Newest ``fraction`` of timestamps as holdout; earlier rows whose label reaches it purged.

    ``purge``: each row's label end time (``Dataset.label_end``), or a fixed look-ahead.
    """
    times = np.unique(ts)
    cut = times[int(len(times) * (1 - fraction))]
    holdout = np.flatnonzero(ts >= cut)
    train = np.flatnonzero((ts < cut) & (_label_end(ts, purge) < cut))
    return Split(train, holdout)


def walk_forward(ts: np.ndarray, folds: int, purge: np.timedelta64 | np.ndarray) -> list[Split]:
    """Expanding-window folds over ``ts``: train on blocks 0..k, validate on block k+1."""
    label_end = _label_end(ts, purge)
    times = np.unique(ts)
    edges = np.linspace(0, len(times), folds + 2).astype(int)
    splits = []
    for k in range(1, folds + 1):
        valid_start, valid_end = times[edges[k]], times[min(edges[k + 1], len(times) - 1)]
        last = edges[k + 1] >= len(times)
        valid = np.flatnonzero(
            (ts >= valid_start) & ((ts <= valid_end) if last else (ts < valid_end))
        )
        # No training label reaches into validation.
        train = np.flatnonzero((ts < valid_start) & (label_end < valid_start))
        splits.append(Split(train, valid))
    return splits
