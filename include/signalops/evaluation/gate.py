"""The champion/challenger gate: every number behind the decision goes into the report.

The challenger must (1) beat the naive baseline (always the majority class of the training
labels) on the primary metric, (2) meet the absolute floors, and (3) not be worse than the
current champion beyond ``tolerance``: the lower end of a paired bootstrap confidence
interval of (challenger - champion) on the same holdout, oriented so that higher is better,
must be >= -tolerance. The bootstrap resamples blocks of consecutive timestamps (one label
horizon long) so that autocorrelated rows are not treated as independent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from signalops.config import EvaluationSettings
from signalops.evaluation.metrics import log_loss, roc_auc

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "log_loss": False, "brier": False}


def _metric(name: str) -> Callable[[np.ndarray, np.ndarray], float]:
    return {
        "roc_auc": roc_auc,
        "log_loss": log_loss,
        "accuracy": lambda y, p: float(np.mean((p > 0.5) == (y == 1))),
        "brier": lambda y, p: float(np.mean((p - y) ** 2)),
    }[name]


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
    """CI of metric(challenger) - metric(champion), signed so that > 0 favours the challenger."""
    fn, sign = _metric(metric), (1.0 if HIGHER_IS_BETTER[metric] else -1.0)
    times, inverse = np.unique(ts, return_inverse=True)
    rows_by_time = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[rows_by_time], np.arange(len(times)))
    ends = np.append(starts[1:], len(rows_by_time))
    n_blocks = max(1, int(np.ceil(len(times) / block)))
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    for i in range(samples):
        first = rng.integers(0, max(1, len(times) - block + 1), n_blocks)
        chosen_times = (first[:, None] + np.arange(block)[None, :]).ravel()
        chosen_times = chosen_times[chosen_times < len(times)]
        idx = np.concatenate([rows_by_time[starts[t] : ends[t]] for t in chosen_times])
        diffs[i] = sign * (fn(y[idx], p_challenger[idx]) - fn(y[idx], p_champion[idx]))
    alpha = (1 - confidence) / 2
    point = sign * (fn(y, p_challenger) - fn(y, p_champion))
    return {
        "difference": float(point),
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
