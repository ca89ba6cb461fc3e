"""ML metrics of probabilities and trading metrics of the signal they give.

The one home of these formulas: the gate's bootstrap reuses the per-row losses below.

The trading backtest trades each symbol every ``H`` bars (the label horizon), so the
returns it adds up never overlap: position ``+1`` (long), ``-1`` (short, long/short only)
or ``0`` from the probability and a threshold, paid ``cost_bps`` per unit of position
change, earning ``label_return`` (the log return over the next H bars). Symbols are equally
weighted per decision time. Sharpe is net of costs and annualized with the market's bars
per year (``signalops.calendar.annualization``): ``bars_per_year / H`` decisions a year.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd

EPS = 1e-15


def log_loss_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row cross-entropy of P(up) ``p`` against labels ``y`` (probabilities clipped)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def correct_rows(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """1.0 where the call ``p > threshold`` (up) matches the label, else 0.0."""
    return ((np.asarray(p) > threshold) == (np.asarray(y) == 1)).astype(np.float64)


def brier_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-row squared error of the probability."""
    return (np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean cross-entropy (natural log)."""
    return float(np.mean(log_loss_rows(y, p)))


def accuracy(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Share of rows where ``p > threshold`` calls the label right."""
    return float(np.mean(correct_rows(y, p, threshold)))


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with average ranks for ties; 0.5 when one class is absent."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    ranks = pd.Series(p).rank(method="average").to_numpy()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ml_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    pred = p > threshold
    tp = float(np.sum(pred & (y == 1)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {
        "log_loss": log_loss(y, p),
        "roc_auc": roc_auc(y, p),
        "accuracy": accuracy(y, p, threshold),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "brier": float(np.mean(brier_rows(y, p))),
    }


def trading_metrics(
    frame: pd.DataFrame,
    p: np.ndarray,
    horizon_bars: int,
    bars_per_year: float,
    strategy: Literal["long_short", "long_flat"],
    threshold: float,
    cost_bps: float,
) -> dict[str, float]:
    """Backtest of the signal on ``frame`` (symbol, ts, label_return) with probabilities p.

    ``bars_per_year``: how many bars the market fills in a year (observed in the data or
    from its calendar), so a daily weekday series annualizes with ~252, not 365.
    """
    if not (math.isfinite(bars_per_year) and bars_per_year > 0):
        raise ValueError(f"bars_per_year must be a positive number, got {bars_per_year!r}")
    data = pd.DataFrame(
        {
            "symbol": frame["symbol"].to_numpy(),
            "ts": frame["ts"].array,  # keeps datetime64 (to_numpy would box tz-aware values)
            "ret": frame["label_return"].to_numpy(),
            "p": np.asarray(p),
        }
    )
    data = data.sort_values(["symbol", "ts"], kind="stable")
    # Decisions every H bars per symbol: non-overlapping holding periods.
    data = data[data.groupby("symbol").cumcount() % horizon_bars == 0]
    long_ = data["p"].to_numpy() > threshold
    position = np.where(long_, 1.0, -1.0 if strategy == "long_short" else 0.0)
    data = data.assign(position=position)
    change = data.groupby("symbol")["position"].diff().abs().fillna(data["position"].abs())
    data = data.assign(
        pnl=data["position"] * data["ret"] - change * cost_bps / 1e4, turnover=change
    )
    per_time = data.groupby("ts")[["pnl", "turnover"]].mean()
    pnl = per_time["pnl"].to_numpy()
    equity = np.cumsum(pnl)
    drawdown = (
        float(np.max(np.maximum.accumulate(np.concatenate(([0.0], equity)))[1:] - equity))
        if len(equity)
        else 0.0
    )
    periods_per_year = bars_per_year / horizon_bars
    std = float(np.std(pnl, ddof=1)) if len(pnl) > 1 else 0.0
    active = data["position"].to_numpy() != 0
    hits = (data["position"] * data["ret"]).to_numpy()[active] > 0
    return {
        "cumulative_return": float(math.expm1(equity[-1])) if len(equity) else 0.0,
        "sharpe": float(np.mean(pnl) / std * math.sqrt(periods_per_year)) if std > 0 else 0.0,
        "max_drawdown": float(-math.expm1(-drawdown)),
        "hit_rate": float(hits.mean()) if len(hits) else 0.0,
        "turnover": float(per_time["turnover"].mean()) if len(per_time) else 0.0,
        "trades": float(len(data)),
    }
