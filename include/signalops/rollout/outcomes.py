"""Outcomes: logged predictions joined with what the market did, and live metrics.

A prediction can be labeled when it names its symbol and the bar time of its features
(``features_ts``: always for predictions by symbol, for inline features when the caller sends
it) and the bars hold the close ``H`` bars later. The label is the training label: ``up``
when that close is above the close of the features' bar; ``return`` its log return.
Joining is idempotent (insert-or-ignore on the prediction's key); predictions whose horizon
has not matured yet are picked up by a later run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from signalops.config import Settings
from signalops.evaluation import metrics as ml
from signalops.warehouse import Warehouse, to_utc_series
from signalops.warehouse import outcomes as outcome_rows
from signalops.warehouse import predictions as prediction_rows

log = logging.getLogger(__name__)

KEY = ("request_id", "row_index", "signal_name", "role")


def join_outcomes(settings: Settings, batch: int = 50_000) -> dict[str, int]:
    """Label every matured, not yet labeled prediction. Returns counts."""
    horizon = settings.features.horizon_bars
    joined = pending = 0
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        with warehouse.connect() as conn:
            preds = prediction_rows.unlabeled(conn, batch)
        if preds.empty:
            return {"joined": 0, "pending": 0}
        preds["features_ts"] = to_utc_series(preds["features_ts"])
        preds["ts"] = to_utc_series(preds["ts"])
        # The label's bar is the H-th bar after the features' bar in the symbol's series
        # (bars, not H x bar length: weekends and closed sessions lie in between).
        bars = warehouse.read_bars_around(
            sorted(preds["symbol"].unique().tolist()),
            preds["features_ts"].min().to_pydatetime(),
            preds["features_ts"].max().to_pydatetime(),
            before=0,
            after=horizon + 1,
        )[["symbol", "ts", "close"]]
        later = bars.groupby("symbol")[["ts", "close"]].shift(-horizon)
        bars = bars.assign(matured_at=later["ts"], close_h=later["close"])
        merged = preds.merge(
            bars.rename(columns={"ts": "features_ts", "close": "close_0"}),
            on=["symbol", "features_ts"],
            how="left",
        )
        ready = merged.dropna(subset=["close_0", "close_h"])
        pending = len(merged) - len(ready)
        if not ready.empty:
            now = datetime.now(UTC)
            rows = [
                {
                    **{k: r[k] for k in KEY},
                    "model_version": r["model_version"],
                    "symbol": r["symbol"],
                    "ts": r["ts"].to_pydatetime(),
                    "features_ts": r["features_ts"].to_pydatetime(),
                    "probability": float(r["probability"]),
                    "signal": r["signal"],
                    "label_up": int(r["close_h"] > r["close_0"]),
                    "label_return": float(np.log(r["close_h"] / r["close_0"])),
                    "matured_at": r["matured_at"].to_pydatetime(),
                    "joined_at": now,
                }
                for r in ready.to_dict("records")
            ]
            with warehouse.begin() as conn:
                outcome_rows.insert_new(conn, rows)
            joined = len(rows)
    log.info("outcomes: %d predictions labeled, %d not matured (or no bar yet)", joined, pending)
    return {"joined": joined, "pending": pending}


@dataclass
class LiveMetrics:
    version: str
    role: str
    predictions: int
    latency_p95_ms: float | None
    outcomes: int
    accuracy: float | None
    log_loss: float | None
    hit_rate: float | None  # share of BUY/SELL signals that went the right way
    net_return: float | None  # mean per prediction: position x return - costs
    scores: np.ndarray
    labels: np.ndarray  # per outcome: 1 up, 0 down
    probs: np.ndarray  # per outcome
    failures: int = 0  # failed scorings (``scoring_errors``): raised, or could not read input

    @property
    def scorings(self) -> int:
        """Rows it was asked to score: logged predictions + failures."""
        return self.predictions + self.failures

    @property
    def error_rate(self) -> float | None:
        return self.failures / self.scorings if self.scorings else None

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("scores", "labels", "probs")}
        return {**out, "error_rate": self.error_rate}


def live_metrics(
    settings: Settings,
    warehouse: Warehouse,
    signal: str,
    version: str,
    roles: tuple[str, ...],
    since: datetime,
    until: datetime | None = None,
) -> LiveMetrics:
    """What ``version`` did (in ``roles``) since ``since``: from the prediction log and the
    outcomes joined so far."""
    until = until or datetime.now(UTC)
    cost = settings.evaluation.cost_bps / 10_000
    with warehouse.connect() as conn:
        pred = prediction_rows.scores(conn, signal, version, roles, since, until)
        out = outcome_rows.labeled(conn, signal, version, roles, since, until)
    scores = np.array([r[0] for r in pred], dtype=np.float64)
    latency = np.array([r[1] for r in pred], dtype=np.float64)
    probs = np.array([r[0] for r in out], dtype=np.float64)
    labels = np.array([r[2] for r in out], dtype=np.float64)
    signals = np.array([r[1] for r in out], dtype=object)
    returns = np.array([r[3] for r in out], dtype=np.float64)
    accuracy = log_loss = hit = net = None
    if len(out):
        accuracy = ml.accuracy(labels, probs)
        log_loss = ml.log_loss(labels, probs)
        position = np.where(signals == "BUY", 1.0, np.where(signals == "SELL", -1.0, 0.0))
        traded = position != 0
        if traded.any():
            hit = float(np.mean((position[traded] > 0) == (labels[traded] == 1)))
        net = float(np.mean(position * returns - np.abs(position) * cost))
    return LiveMetrics(
        version=version,
        role="+".join(roles),
        predictions=len(pred),
        latency_p95_ms=float(np.percentile(latency, 95)) if len(latency) else None,
        outcomes=len(out),
        accuracy=accuracy,
        log_loss=log_loss,
        hit_rate=hit,
        net_return=net,
        scores=scores,
        labels=labels,
        probs=probs,
    )
