"""The promotion gate: every rule is declared once in :data:`RULES` and judged for every model.

A challenger is promoted only when no rule fails. The rules (README, "The promotion gate"):

1. ``beats_baseline``: better than the naive baseline (the training majority class, with the
   training base rate as its probability) on the primary metric, and no worse on log loss.
2. ``net_sharpe``: the holdout backtest's annualized Sharpe after costs > ``min_sharpe``.
3. ``floor_roc_auc`` / ``ceiling_log_loss``: the absolute floors.
4. ``not_worse_than_champion``: a non-inferiority test on the primary metric. A gain (point
   difference >= 0) is never "worse"; a loss fails only when the paired block-bootstrap CI
   of (challenger - champion) lies wholly below ``-non_inferiority_margin``, i.e. the holdout
   shows at ``confidence`` that the challenger is worse by more than the margin. A small
   holdout (wide CI) therefore cannot reject a model on noise, and a huge one (narrow CI)
   cannot reject it for an immaterial loss. With no champion yet the rule is reported as
   not applicable.

The bootstrap resamples blocks of consecutive timestamps (one label horizon long) so that
autocorrelated rows are not treated as independent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from signalops.config import EvaluationSettings
from signalops.evaluation.metrics import brier_rows, correct_rows, log_loss_rows

HIGHER_IS_BETTER = {"roc_auc": True, "accuracy": True, "log_loss": False, "brier": False}

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not applicable"

# A model's holdout figures as the report holds them: {"ml": {...}, "trading": {...}}.
Figures = Mapping[str, Mapping[str, float]]


class _WeightedMetric:
    """A metric of fixed (y, p) under per-row weights: a bootstrap resample is a weighting.

    Resampling rows with replacement equals weighting each row by how often it was drawn,
    so the sort (for AUC) and the per-row losses are computed once, and each bootstrap
    sample costs a few vectorized passes instead of a fresh sort of the holdout.
    """

    def __init__(self, name: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5):
        self.name = name
        y = np.asarray(y, dtype=np.float64)
        p = np.asarray(p, dtype=np.float64)
        self.y = y
        if name == "roc_auc":
            # Ties share a group: an equal score counts half, as average ranks do.
            values, self.group = np.unique(p, return_inverse=True)
            self.groups = len(values)
        elif name == "log_loss":
            self.row = log_loss_rows(y, p)
        elif name == "accuracy":
            self.row = correct_rows(y, p, threshold)
        elif name == "brier":
            self.row = brier_rows(y, p)
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
    threshold: float = 0.5,
) -> dict[str, float]:
    """CI of metric(challenger) - metric(champion), signed so that > 0 favours the challenger.

    Moving-block bootstrap over timestamps: each sample draws ceil(T / block) blocks of
    ``block`` consecutive timestamps (all symbols' rows at those times), so serially
    correlated rows move together and both models see exactly the same resample.
    """
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    challenger = _WeightedMetric(metric, y, p_challenger, threshold)
    champion = _WeightedMetric(metric, y, p_champion, threshold)
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
        "rows": float(len(time_of_row)),
        "timestamps": float(n_times),
    }


@dataclass(frozen=True)
class Evidence:
    """What the rules judge, all on the same holdout."""

    challenger: Figures
    baseline: Figures
    comparison: Mapping[str, float] | None  # paired bootstrap vs the champion; None: none yet


@dataclass(frozen=True)
class Outcome:
    """One rule's verdict: passed is None when the rule does not apply."""

    passed: bool | None
    detail: str
    numbers: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """A promotion rule: its name, the requirement in words and the setting holding its bar."""

    name: str
    text: str
    setting: str | None  # the EvaluationSettings field with the threshold; None: no setting
    judge: Callable[[EvaluationSettings, Evidence], Outcome]

    def threshold(self, cfg: EvaluationSettings) -> Any:
        return getattr(cfg, self.setting) if self.setting else None


def _better(metric: str, a: float, b: float) -> bool:
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def _beats_baseline(cfg: EvaluationSettings, ev: Evidence) -> Outcome:
    metric = cfg.primary_metric
    c, b = ev.challenger["ml"][metric], ev.baseline["ml"][metric]
    ll_c, ll_b = ev.challenger["ml"]["log_loss"], ev.baseline["ml"]["log_loss"]
    slack = cfg.baseline_margin  # 0 (the default): strictly better, never worse
    bar = b - slack if HIGHER_IS_BETTER[metric] else b + slack
    beats, holds = _better(metric, c, bar), ll_c <= ll_b + slack
    detail = f"{metric} {c:.4f} vs baseline {b:.4f} ({'better' if beats else 'not better'})"
    if metric != "log_loss":
        detail += f", log_loss {ll_c:.4f} vs {ll_b:.4f} ({'no worse' if holds else 'worse'})"
    if slack:
        detail += f" (baseline_margin {slack:g})"
    numbers = {metric: c, f"baseline_{metric}": b, "log_loss": ll_c, "baseline_log_loss": ll_b}
    return Outcome(beats and holds, detail, numbers)


def _net_sharpe(cfg: EvaluationSettings, ev: Evidence) -> Outcome:
    sharpe = ev.challenger["trading"]["sharpe"]
    detail = (
        f"net Sharpe {sharpe:.2f} after {cfg.cost_bps:g} bps costs, must exceed {cfg.min_sharpe:g}"
    )
    return Outcome(sharpe > cfg.min_sharpe, detail, {"sharpe": sharpe})


def _floor_roc_auc(cfg: EvaluationSettings, ev: Evidence) -> Outcome:
    auc = ev.challenger["ml"]["roc_auc"]
    return Outcome(
        auc >= cfg.min_roc_auc, f"roc_auc {auc:.4f}, floor {cfg.min_roc_auc:g}", {"roc_auc": auc}
    )


def _ceiling_log_loss(cfg: EvaluationSettings, ev: Evidence) -> Outcome:
    loss = ev.challenger["ml"]["log_loss"]
    return Outcome(
        loss <= cfg.max_log_loss,
        f"log_loss {loss:.4f}, ceiling {cfg.max_log_loss:g}",
        {"log_loss": loss},
    )


def _not_worse_than_champion(cfg: EvaluationSettings, ev: Evidence) -> Outcome:
    if ev.comparison is None:
        return Outcome(None, "no champion yet: nothing to compare with")
    comp, margin = ev.comparison, cfg.non_inferiority_margin
    diff, low, high = comp["difference"], comp["ci_low"], comp["ci_high"]
    if diff >= 0:
        passed, verdict = True, "a gain is never worse"
    elif high < -margin:
        passed, verdict = False, "worse beyond the margin: the whole CI lies below -margin"
    else:
        passed, verdict = True, "not shown worse beyond the margin"
    detail = (
        f"{cfg.primary_metric} challenger - champion = {diff:+.4f}, "
        f"{cfg.confidence:.0%} CI [{low:+.4f}, {high:+.4f}] ({int(comp['samples'])} paired "
        f"block-bootstrap samples; the holdout resolves ±{(high - low) / 2:.4f}), margin "
        f"{margin:g}, n = {int(comp['rows'])} rows over {int(comp['timestamps'])} timestamps: "
        f"{verdict}"
    )
    numbers = {k: float(comp[k]) for k in ("difference", "ci_low", "ci_high", "rows")}
    return Outcome(passed, detail, numbers)


RULES: tuple[Rule, ...] = (
    Rule(
        "beats_baseline",
        "primary metric better than the naive baseline's, and log loss <= the baseline's "
        "(each within baseline_margin)",
        "baseline_margin",
        _beats_baseline,
    ),
    Rule(
        "net_sharpe",
        "annualized Sharpe of the holdout backtest after costs > min_sharpe",
        "min_sharpe",
        _net_sharpe,
    ),
    Rule("floor_roc_auc", "ROC-AUC >= min_roc_auc", "min_roc_auc", _floor_roc_auc),
    Rule("ceiling_log_loss", "log loss <= max_log_loss", "max_log_loss", _ceiling_log_loss),
    Rule(
        "not_worse_than_champion",
        "primary metric: challenger - champion >= 0, or its paired block-bootstrap CI not "
        "wholly below -margin (not applicable without a champion)",
        "non_inferiority_margin",
        _not_worse_than_champion,
    ),
)


@dataclass
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    cfg: EvaluationSettings,
    challenger: Figures,
    baseline: Figures,
    comparison: Mapping[str, float] | None,
) -> GateDecision:
    """Judge every rule on figures already computed on the holdout (comparison: vs champion)."""
    for role, figures, groups in (
        ("challenger", challenger, ("ml", "trading")),
        ("baseline", baseline, ("ml",)),
    ):
        missing = [g for g in groups if g not in figures]
        if missing:
            raise ValueError(f"the gate needs the {role}'s {missing} figures; got {list(figures)}")
    evidence = Evidence(challenger, baseline, comparison)
    decision = GateDecision(passed=True)
    for rule in RULES:
        outcome = rule.judge(cfg, evidence)
        status = NOT_APPLICABLE if outcome.passed is None else PASS if outcome.passed else FAIL
        decision.checks[rule.name] = {
            "status": status,
            "passed": outcome.passed,
            "rule": rule.text,
            "setting": f"evaluation.{rule.setting}" if rule.setting else None,
            "threshold": rule.threshold(cfg),
            "detail": outcome.detail,
            "numbers": outcome.numbers,
        }
        if outcome.passed is False:
            decision.passed = False
            decision.reasons.append(f"{rule.name}: {outcome.detail}")
    return decision
