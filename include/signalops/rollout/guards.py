"""The canary's guards: the rules that judge the challenger against the champion (pure).

``judge`` gets both sides' live figures at the current step (``LiveMetrics``, see
``signalops.rollout.step_metrics``) and the ``rollout.*`` settings, and returns a
``Verdict``: a breach (why the rollout must roll back at once), or whether the step is
ready to advance, and what it still waits for. The guards, in the order they are checked:

* **error rate**: the challenger's failed scorings (``scoring_errors``: its model raised,
  or it could not read the request's input) over its scorings (logged predictions +
  failures) must not exceed the champion's by more than ``max_error_rate_excess`` with a
  one-sided test below ``significance`` (``worse_error_rate_p``), once the challenger has
  ``min_predictions`` scorings at the step (the other guards' minimum; its failures count);
* **latency**: the challenger's p95 must not exceed ``max_latency_ratio`` x the champion's
  + ``latency_slack_ms`` (once the challenger has ``min_predictions`` and
  ``min_compare_rows`` predictions at the step);
* **score distribution**: the PSI of the challenger's scores on the champion's must not
  exceed ``max_score_psi`` (then too, with ``min_compare_rows`` scores on both sides);
* **agreement** (shadow step, ``min_predictions`` reached): the share of requests where
  both give the same BUY/SELL/HOLD must reach ``min_agreement``;
* **live accuracy and log loss**, once ``min_outcomes`` matured outcomes exist for both:
  not significantly worse (one-sided tests at ``significance``: ``worse_accuracy_p``,
  ``worse_log_loss_p``).

A step is ready when the challenger has ``min_predictions`` predictions at it, it has
lasted ``min_step_minutes`` and no guard breached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np

from signalops.config import RolloutSettings
from signalops.evaluation import metrics as ml
from signalops.rollout.outcomes import LiveMetrics


@dataclass
class Verdict:
    breach: str | None = None  # why it must roll back
    ready: bool = False  # enough data and time to advance
    waiting: list[str] = field(default_factory=list)  # what it still waits for
    numbers: dict[str, Any] = field(default_factory=dict)


def _psi(a: np.ndarray, b: np.ndarray, bins: int = 10) -> float:
    """PSI of ``b`` on ``a``'s quantile bins, with half a count added to every bin: live
    samples are small and correlated, and an empty bin must not read as a collapse."""
    from signalops.drift.profile import column_profile
    from signalops.drift.stats import bin_counts, psi

    profile = column_profile(a, bins, 10)
    return psi(np.asarray(profile["counts"]) + 0.5, bin_counts(b, profile["edges"]) + 0.5)


def worse_accuracy_p(champion: LiveMetrics, challenger: LiveMetrics) -> float:
    """One-sided p-value of "the challenger's live accuracy is lower" (two-proportion z)."""
    from scipy.stats import norm

    n1, n2 = champion.outcomes, challenger.outcomes
    a1, a2 = champion.accuracy or 0.0, challenger.accuracy or 0.0
    pooled = (a1 * n1 + a2 * n2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n2), 1e-12))
    return float(norm.sf((a1 - a2) / se))


def worse_error_rate_p(champion: LiveMetrics, challenger: LiveMetrics) -> float:
    """One-sided p-value of "the challenger fails more often" (two-proportion z)."""
    from scipy.stats import norm

    n1, n2 = champion.scorings, challenger.scorings
    r1, r2 = champion.error_rate or 0.0, challenger.error_rate or 0.0
    pooled = (champion.failures + challenger.failures) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n2), 1e-12))
    return float(norm.sf((r2 - r1) / se))


def error_rate_breach(
    cfg: RolloutSettings, champion: LiveMetrics, challenger: LiveMetrics, numbers: dict[str, Any]
) -> str | None:
    """The error-rate guard (its figures go into ``numbers``); None when it holds or cannot
    judge yet (fewer than ``min_predictions`` challenger scorings, or none of the champion)."""
    if challenger.scorings < cfg.min_predictions or champion.scorings == 0:
        return None
    excess = (challenger.error_rate or 0.0) - (champion.error_rate or 0.0)
    p_err = worse_error_rate_p(champion, challenger)
    numbers.update(error_rate_excess=excess, p_error_rate_worse=p_err)
    if excess > cfg.max_error_rate_excess and p_err < cfg.significance:
        return (
            f"error rate {challenger.error_rate:.3f} ({challenger.failures} of "
            f"{challenger.scorings} scorings failed) vs champion {champion.error_rate:.3f}: "
            f"{excess:.3f} over it > {cfg.max_error_rate_excess} "
            f"(p = {p_err:.4f} < {cfg.significance})"
        )
    return None


def worse_log_loss_p(champion: LiveMetrics, challenger: LiveMetrics) -> float:
    """One-sided p-value of "the challenger's log loss is higher" (Welch's t-test)."""
    from scipy.stats import ttest_ind

    result = ttest_ind(
        ml.log_loss_rows(challenger.labels, challenger.probs),
        ml.log_loss_rows(champion.labels, champion.probs),
        equal_var=False,
        alternative="greater",
    )
    return float(result.pvalue)


def outcome_breach(
    cfg: RolloutSettings, champion: LiveMetrics, challenger: LiveMetrics, numbers: dict[str, Any]
) -> str | None:
    """Live accuracy and log loss, once both have ``min_outcomes`` matured outcomes (their
    p-values go into ``numbers``); None when they hold or cannot judge yet."""
    if champion.outcomes < cfg.min_outcomes or challenger.outcomes < cfg.min_outcomes:
        return None
    p_acc = worse_accuracy_p(champion, challenger)
    p_ll = worse_log_loss_p(champion, challenger)
    numbers.update(p_accuracy_worse=p_acc, p_log_loss_worse=p_ll)
    if p_acc < cfg.significance:
        return (
            f"live accuracy {challenger.accuracy:.3f} vs champion {champion.accuracy:.3f} "
            f"is significantly worse (p = {p_acc:.4f} < {cfg.significance}, "
            f"{challenger.outcomes} vs {champion.outcomes} outcomes)"
        )
    if p_ll < cfg.significance:
        return (
            f"live log loss {challenger.log_loss:.4f} vs champion {champion.log_loss:.4f} "
            f"is significantly worse (p = {p_ll:.4f} < {cfg.significance})"
        )
    return None


def judge(
    cfg: RolloutSettings,
    shadow_step: bool,
    champion: LiveMetrics,
    challenger: LiveMetrics,
    step_age: timedelta,
    agreement: float | None = None,
) -> Verdict:
    v = Verdict()
    v.numbers = {
        "champion": champion.as_dict(),
        "challenger": challenger.as_dict(),
        "step_minutes": round(step_age.total_seconds() / 60, 2),
    }
    v.breach = error_rate_breach(cfg, champion, challenger, v.numbers)
    if v.breach:
        return v
    enough = challenger.predictions >= cfg.min_predictions and champion.predictions > 0
    comparable = min(len(champion.scores), len(challenger.scores)) >= cfg.min_compare_rows
    if enough and challenger.predictions >= cfg.min_compare_rows:
        if (
            challenger.latency_p95_ms is not None
            and champion.latency_p95_ms is not None
            and challenger.latency_p95_ms
            > champion.latency_p95_ms * cfg.max_latency_ratio + cfg.latency_slack_ms
        ):
            v.breach = (
                f"latency p95 {challenger.latency_p95_ms:.2f} ms > {cfg.max_latency_ratio} x "
                f"champion {champion.latency_p95_ms:.2f} ms + {cfg.latency_slack_ms} ms"
            )
            return v
        if comparable:
            score_psi = _psi(champion.scores, challenger.scores)
            v.numbers["score_psi"] = score_psi
            if score_psi > cfg.max_score_psi:
                v.breach = (
                    f"score distribution PSI {score_psi:.3f} vs champion > {cfg.max_score_psi}"
                )
                return v
    if enough:
        if shadow_step and agreement is not None:
            v.numbers["agreement"] = agreement
            if agreement < cfg.min_agreement:
                v.breach = f"signal agreement {agreement:.2f} with champion < {cfg.min_agreement}"
                return v
    else:
        v.waiting.append(
            f"{challenger.predictions}/{cfg.min_predictions} challenger predictions at the step"
        )
    v.breach = outcome_breach(cfg, champion, challenger, v.numbers)
    if v.breach:
        return v
    if step_age < timedelta(minutes=cfg.min_step_minutes):
        v.waiting.append(f"{step_age} at the step of {cfg.min_step_minutes} min")
    v.ready = enough and not v.waiting
    return v
