"""The canary guards (pure): the one-sided tests against direct computations, and what the
judge does with too little data, a slow challenger, a shifted score distribution, worse
live accuracy, failed scorings, and a healthy step; the A/B report built from the same
figures."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from scipy import stats

from signalops.config import RolloutSettings
from signalops.rollout import report
from signalops.rollout.guards import (
    judge,
    worse_accuracy_p,
    worse_error_rate_p,
    worse_log_loss_p,
)
from signalops.rollout.outcomes import LiveMetrics

RNG = np.random.default_rng(6)


def _metrics(
    version: str,
    n: int,
    p_scores: tuple[float, float] = (5, 5),
    latency: float = 2.0,
    outcomes: int = 0,
    skill: float = 0.6,
) -> LiveMetrics:
    labels = RNG.integers(0, 2, size=outcomes).astype(float)
    right = RNG.uniform(size=outcomes) < skill
    probs = np.where(right == (labels == 1), 0.6, 0.4) + RNG.normal(0, 0.01, outcomes)
    acc = float(np.mean((probs > 0.5) == (labels == 1))) if outcomes else None
    clipped = np.clip(probs, 1e-15, 1 - 1e-15)
    ll = (
        float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
        if outcomes
        else None
    )
    return LiveMetrics(
        version=version,
        role="x",
        predictions=n,
        latency_p95_ms=latency if n else None,
        outcomes=outcomes,
        accuracy=acc,
        log_loss=ll,
        hit_rate=None,
        net_return=None,
        scores=RNG.beta(*p_scores, size=n),
        labels=labels,
        probs=probs,
    )


def test_accuracy_test_matches_a_direct_two_proportion_z_test() -> None:
    champion = _metrics("1", 10, outcomes=800, skill=0.62)
    challenger = _metrics("2", 10, outcomes=600, skill=0.55)
    a1, a2, n1, n2 = champion.accuracy, challenger.accuracy, 800, 600
    assert a1 is not None and a2 is not None
    pooled = (a1 * n1 + a2 * n2) / (n1 + n2)
    z = (a1 - a2) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert worse_accuracy_p(champion, challenger) == pytest.approx(stats.norm.sf(z), rel=1e-12)


def test_log_loss_test_is_welch_one_sided() -> None:
    champion = _metrics("1", 10, outcomes=500, skill=0.65)
    challenger = _metrics("2", 10, outcomes=500, skill=0.5)

    def losses(m: LiveMetrics) -> np.ndarray:
        return -(m.labels * np.log(m.probs) + (1 - m.labels) * np.log(1 - m.probs))

    direct = stats.ttest_ind(losses(challenger), losses(champion), equal_var=False).pvalue / 2
    assert worse_log_loss_p(champion, challenger) == pytest.approx(direct, rel=1e-9)


CFG = RolloutSettings(min_predictions=200, min_outcomes=300, min_step_minutes=10)
LONG = timedelta(minutes=30)


def test_too_little_data_or_time_waits() -> None:
    few = judge(CFG, False, _metrics("1", 5000), _metrics("2", 50), LONG)
    assert few.breach is None and not few.ready and "50/200" in few.waiting[0]
    early = judge(CFG, False, _metrics("1", 5000), _metrics("2", 500), timedelta(minutes=3))
    assert early.breach is None and not early.ready


def test_a_healthy_step_is_ready() -> None:
    v = judge(
        CFG,
        False,
        _metrics("1", 5000, outcomes=900),
        _metrics("2", 600, outcomes=400),
        LONG,
    )
    assert v.breach is None and v.ready, v
    assert v.numbers["score_psi"] < CFG.max_score_psi


def test_slow_challenger_breaches_latency() -> None:
    v = judge(CFG, False, _metrics("1", 5000, latency=2.0), _metrics("2", 500, latency=9.0), LONG)
    assert v.breach is not None and "latency p95" in v.breach


def test_shifted_scores_breach_psi_only_with_enough_rows() -> None:
    shifted = judge(CFG, False, _metrics("1", 5000), _metrics("2", 500, p_scores=(9, 2)), LONG)
    assert shifted.breach is not None and "PSI" in shifted.breach
    small = RolloutSettings(min_predictions=50, min_compare_rows=300)
    too_few = judge(small, False, _metrics("1", 5000), _metrics("2", 60, p_scores=(9, 2)), LONG)
    assert too_few.breach is None and "score_psi" not in too_few.numbers


def test_worse_live_accuracy_breaches_once_enough_outcomes() -> None:
    champion = _metrics("1", 5000, outcomes=1000, skill=0.62)
    worse = judge(CFG, True, champion, _metrics("2", 500, outcomes=800, skill=0.5), LONG, 0.9)
    assert worse.breach is not None and "accuracy" in worse.breach
    unjudged = judge(CFG, True, champion, _metrics("2", 500, outcomes=100, skill=0.5), LONG, 0.9)
    assert unjudged.breach is None  # 100 < min_outcomes: not judged yet


def test_shadow_disagreement_breaches() -> None:
    v = judge(CFG, True, _metrics("1", 5000), _metrics("2", 500), LONG, agreement=0.3)
    assert v.breach is not None and "agreement" in v.breach


def test_steps_must_rise_to_one() -> None:
    with pytest.raises(ValueError, match="rise"):
        RolloutSettings(steps=(0.0, 0.5, 0.2, 1.0))
    with pytest.raises(ValueError, match="rise"):
        RolloutSettings(steps=(0.0, 0.5))
    assert RolloutSettings(steps="0,0.1,1").steps == (0.0, 0.1, 1.0)  # type: ignore[arg-type]


def test_error_rate_test_matches_a_direct_two_proportion_z_test() -> None:
    champion = replace(_metrics("1", 4000), failures=12)
    challenger = replace(_metrics("2", 170), failures=30)
    n1, n2 = 4012, 200
    r1, r2 = 12 / n1, 30 / n2
    pooled = 42 / (n1 + n2)
    z = (r2 - r1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    assert challenger.error_rate == pytest.approx(0.15)
    assert worse_error_rate_p(champion, challenger) == pytest.approx(stats.norm.sf(z), rel=1e-12)


def test_failing_challenger_breaches_once_it_has_enough_scorings() -> None:
    champion = replace(_metrics("1", 5000), failures=5)
    # 60 of 200 scorings failed: judged although only 140 were logged (< min_predictions).
    failing = judge(CFG, False, champion, replace(_metrics("2", 140), failures=60), LONG)
    assert failing.breach is not None and "error rate 0.300" in failing.breach
    assert failing.numbers["p_error_rate_worse"] < CFG.significance
    assert failing.numbers["challenger"]["error_rate"] == pytest.approx(0.3)
    early = judge(CFG, False, champion, replace(_metrics("2", 100), failures=30), LONG)
    assert early.breach is None and "p_error_rate_worse" not in early.numbers  # 130 < 200
    # Within max_error_rate_excess of the champion's rate: holds.
    close = judge(CFG, False, champion, replace(_metrics("2", 995), failures=5), LONG)
    assert close.breach is None and close.ready, close


def test_ab_report_carries_both_sides_tests_guards_and_decision() -> None:
    champion = replace(_metrics("1", 3000, outcomes=600, skill=0.6), failures=3)
    challenger = replace(_metrics("2", 900, outcomes=400, skill=0.6), failures=1)
    verdict = judge(CFG, False, champion, challenger, LONG)
    row = {
        "id": "r-1",
        "signal_name": "direction_1h",
        "champion_version": "1",
        "challenger_version": "2",
        "started_at": datetime(2026, 1, 1, tzinfo=UTC),
        "status": "promoted",
        "reason": "every step passed",
        "step": 4,
    }
    history = [
        {"at": "t0", "event": "started", "step": 0, "weight": 0.0, "reason": "started"},
        {"at": "t1", "event": "promote", "step": 4, "weight": 1.0, "reason": "every step passed",
         "numbers": verdict.numbers},
    ]  # fmt: skip
    built = report.build(row, champion, challenger, history, datetime(2026, 1, 2, tzinfo=UTC))
    assert built["decision"] == "promoted" and built["challenger"]["predictions"] == 900
    assert built["champion"]["error_rate"] == pytest.approx(3 / 3003)
    assert built["tests"]["p_accuracy_worse"] == pytest.approx(
        worse_accuracy_p(champion, challenger)
    )
    assert built["guards"][0]["numbers"]["score_psi"] == verdict.numbers["score_psi"]
    text = report.markdown(built)
    assert "**Decision: promoted**" in text and "| error_rate |" in text
    json.dumps(built, allow_nan=False)  # JSON-safe
