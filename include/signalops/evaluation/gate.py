"""The champion/challenger gate: every number behind the decision goes into the report.

The challenger must (1) beat the naive baseline (always the majority class of the training
labels) on the primary metric, (2) meet the absolute floors, and (3) not be worse than the
current champion beyond ``tolerance``: the lower end of a paired bootstrap confidence
interval of (challenger - champion) on the same holdout, oriented so that higher is better,
must be >= -tolerance. The bootstrap resamples blocks of consecutive timestamps (one label
horizon long) so that autocorrelated rows are not treated as independent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from signalops.config import EvaluationSettings

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "log_loss": False, "brier": False}


class _WeightedMetric:
    """A metric of fixed (y, p) under per-row weights: a bootstrap resample is a weighting.

    Resampling rows with replacement equals weighting each row by how often it was drawn,
    so the sort (for AUC) and the per-row losses are computed once, and each bootstrap
    sample costs a few vectorized passes instead of a fresh sort of the holdout.
    """

    def __init__(self, name: str, y: np.ndarray, p: np.ndarray):
        self.name = name
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        self.y = y
        if name == "roc_auc":
            # Ties share a group: an equal score counts half, as average ranks do.
            values, self.group = np.unique(p, return_inverse=True)
            self.groups = len(values)
        elif name == "log_loss":
            q = np.clip(p, 1e-15, 1 - 1e-15)
            self.row = -(y * np.log(q) + (1 - y) * np.log(1 - q))
        elif name == "accuracy":
            self.row = ((p > 0.5) == (y == 1)).astype(np.float64)
        elif name == "brier":
            self.row = (p - y) ** 2
        else:
            raise ValueError(f"unknown metric {name!r}; known: {sorted(HIGHER_IS_BETTER)}")

    def __call__(self, w: np.ndarray) -> float:
        if self.name != "roc_auc":
            return float(np.dot(w, self.row) / w.sum())
        pos = np.bincount(self.group, weights=w * self.y, minlength=self.groups)
        neg = np.bincount(self.group, weights=w * (1 - self.y), minlength=self.groups)
        n_pos, n_neg = pos.sum(), neg.sum()
        if n_pos == 0 or n_neg == 0:
            return 0.5
        below = np.cumsum(neg) - neg
        return float(np.dot(pos, below + 0.5 * neg) / (n_pos * n_neg))


def paired_bootstrap(
    y: np.ndarray,
    p_challenger: np.ndarray,
    p_champion: np.ndarray,
    ts: np.ndarray,
    metric: str,
    samples: int,
    confidence: float,
    block: int,
    seed: int = 0,
) -> dict[str, float]:
    """CI of metric(challenger) - metric(champion), signed so that > 0 favours the challenger.

    Moving-block bootstrap over timestamps: each sample draws ceil(T / block) blocks of
    ``block`` consecutive timestamps (all symbols' rows at those times), so serially
    correlated rows move together and both models see exactly the same resample.
    """
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    challenger = _WeightedMetric(metric, y, p_challenger)
    champion = _WeightedMetric(metric, y, p_champion)
    times, time_of_row = np.unique(ts, return_inverse=True)
    n_times = len(times)
    block = max(1, min(block, n_times))
    n_blocks = int(np.ceil(n_times / block))
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    for i in range(samples):
        first = rng.integers(0, n_times - block + 1, n_blocks)
        drawn = (first[:, None] + np.arange(block)[None, :]).ravel()
        w = np.bincount(drawn, minlength=n_times)[time_of_row].astype(np.float64)
        diffs[i] = sign * (challenger(w) - champion(w))
    alpha = (1 - confidence) / 2
    ones = np.ones(len(time_of_row))
    return {
        "difference": float(sign * (challenger(ones) - champion(ones))),
        "ci_low": float(np.quantile(diffs, alpha)),
        "ci_high": float(np.quantile(diffs, 1 - alpha)),
        "samples": float(samples),
        "block_timestamps": float(block),
    }


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    cfg: EvaluationSettings,
    challenger: dict[str, float],
    baseline: dict[str, float],
    champion: dict[str, float] | None,
    comparison: dict[str, float] | None,
) -> GateDecision:
    """Apply the gate to ML metrics already computed on the holdout."""
    metric, higher = cfg.primary_metric, HIGHER_IS_BETTER[cfg.primary_metric]
    decision = GateDecision(passed=True)

    def check(name: str, ok: bool, detail: str) -> None:
        decision.checks[name] = {"passed": ok, "detail": detail}
        if not ok:
            decision.passed = False
            decision.reasons.append(f"{name}: {detail}")

    c, b = challenger[metric], baseline[metric]
    check(
        "beats_baseline",
        c > b if higher else c < b,
        f"{metric} {c:.4f} vs naive baseline {b:.4f}",
    )
    check(
        "floor_roc_auc",
        challenger["roc_auc"] >= cfg.min_roc_auc,
        f"roc_auc {challenger['roc_auc']:.4f} (floor {cfg.min_roc_auc})",
    )
    check(
        "ceiling_log_loss",
        challenger["log_loss"] <= cfg.max_log_loss,
        f"log_loss {challenger['log_loss']:.4f} (ceiling {cfg.max_log_loss})",
    )
    if champion is not None and comparison is not None:
        check(
            "not_worse_than_champion",
            comparison["ci_low"] >= -cfg.tolerance,
            f"{metric} challenger - champion = {comparison['difference']:+.4f}, "
            f"{cfg.confidence:.0%} CI [{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}], "
            f"tolerance {cfg.tolerance}",
        )
    return decision
