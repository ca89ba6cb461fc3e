"""What the canary's guards see at a step: both sides' live figures, from the warehouse.

``step_metrics`` gathers, for a rollout row (``rollouts``), the champion's and the
challenger's ``LiveMetrics`` (``signalops.rollout.outcomes.live_metrics``): predictions,
latency and scores since the step started; outcomes (accuracy, log loss, ...) since the
rollout started, as they mature slowly. In the shadow step (weight 0) also the agreement
of the shadow with the champion (``shadow_agreement``). Each side's failed scorings at the
step (``scoring_errors``, written by the sidecar) give its error rate.
``signalops.rollout.guards.judge`` judges them.

``watch_metrics`` gathers the same figures for the watch after a promotion: the new
champion since it was promoted, against the previous champion's record (its last
``rollout.watch_baseline_hours`` as champion before the promotion, on the signal's traffic):
latency, error rate, accuracy and log loss; no score PSI (another window's traffic).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from signalops.config import Settings
from signalops.rollout.outcomes import LiveMetrics, live_metrics
from signalops.warehouse import Warehouse, scoring_errors
from signalops.warehouse import predictions as prediction_rows
from signalops.windows import parse_ts


def step_metrics(
    settings: Settings, warehouse: Warehouse, signal: str, row: dict[str, Any], now: datetime
) -> tuple[LiveMetrics, LiveMetrics, float | None]:
    """Predictions, latency and scores of both since the step started; outcomes since
    the rollout started (they mature slowly; the challenger's shadow outcomes count)."""
    shadow = row["weight"] == 0
    step_since = parse_ts(row["step_started_at"], "step_started_at")
    since = parse_ts(row["started_at"], "started_at")
    version, old = row["challenger_version"], row["champion_version"]
    roles = ("shadow",) if shadow else ("challenger",)

    def metrics(v: str, of: tuple[str, ...], start: datetime) -> LiveMetrics:
        return live_metrics(settings, warehouse, signal, v, of, start, now)

    # The champion on the same traffic (the step's); at 100% it serves nothing at the
    # step: its latency over the rollout so far, no score comparison (earlier steps did).
    champ_all = metrics(old, ("champion",), since)
    champ = metrics(old, ("champion",), step_since)
    failed = failures(warehouse, signal, step_since, now)
    champ = replace(champ, failures=failed.get(old, 0))
    if champ.predictions == 0:
        failed_all = failures(warehouse, signal, since, now)
        champ = replace(champ_all, scores=np.empty(0), failures=failed_all.get(old, 0))
    champ = _with_outcomes(champ, champ_all)
    chall = replace(metrics(version, roles, step_since), failures=failed.get(version, 0))
    chall_all = metrics(version, ("shadow", "challenger"), since)
    agreement = (
        shadow_agreement(settings, warehouse, signal, row, step_since, now) if shadow else None
    )
    return champ, _with_outcomes(chall, chall_all), agreement


def watch_metrics(
    settings: Settings, warehouse: Warehouse, signal: str, row: dict[str, Any], now: datetime
) -> tuple[LiveMetrics, LiveMetrics]:
    """(the previous champion's record, the new champion since its promotion): both as
    champion on the signal's live traffic, with their failed scorings. The watch starts at
    the row's ``step_started_at`` (set at the promotion)."""
    promoted = parse_ts(row["step_started_at"], "step_started_at")
    record_since = promoted - timedelta(hours=settings.rollout.watch_baseline_hours)
    old, new = row["champion_version"], row["challenger_version"]
    before = live_metrics(settings, warehouse, signal, old, ("champion",), record_since, promoted)
    after = live_metrics(settings, warehouse, signal, new, ("champion",), promoted, now)
    failed_before = failures(warehouse, signal, record_since, promoted)
    failed_after = failures(warehouse, signal, promoted, now)
    # No score comparison: the record's traffic is another window's (the market moved);
    # input drift is the drift monitor's. Latency, error rate and outcomes compare.
    return (
        replace(before, scores=np.empty(0), failures=failed_before.get(old, 0)),
        replace(after, failures=failed_after.get(new, 0)),
    )


def rollout_metrics(
    settings: Settings, warehouse: Warehouse, signal: str, row: dict[str, Any], now: datetime
) -> tuple[LiveMetrics, LiveMetrics]:
    """Both sides over the whole rollout (the A/B report): the champion as champion, the
    challenger in the shadow and as challenger, each with its failed scorings."""
    since = parse_ts(row["started_at"], "started_at")
    old, new = row["champion_version"], row["challenger_version"]
    champ = live_metrics(settings, warehouse, signal, old, ("champion",), since, now)
    chall = live_metrics(settings, warehouse, signal, new, ("shadow", "challenger"), since, now)
    failed = failures(warehouse, signal, since, now)
    return (
        replace(champ, failures=failed.get(old, 0)),
        replace(chall, failures=failed.get(new, 0)),
    )


def failures(warehouse: Warehouse, signal: str, since: datetime, until: datetime) -> dict[str, int]:
    """model version -> failed scorings from ``since`` to ``until`` (by the minute)."""
    with warehouse.connect() as conn:
        return scoring_errors.totals(conn, signal, since, until)


def shadow_agreement(
    settings: Settings,
    warehouse: Warehouse,
    signal: str,
    row: dict[str, Any],
    since: datetime,
    now: datetime,
) -> float | None:
    """Share of requests where the shadow and the champion make the same call
    (BUY/SELL/HOLD from their probabilities, before the risk guard)."""
    with warehouse.connect() as conn:
        pairs = prediction_rows.shadow_pairs(conn, signal, row["challenger_version"], since, now)
    if not pairs:
        return None
    label = settings.serving.label
    return float(np.mean([label(a) == label(b) for a, b in pairs]))


def _with_outcomes(step: LiveMetrics, whole: LiveMetrics) -> LiveMetrics:
    return replace(
        step,
        outcomes=whole.outcomes,
        accuracy=whole.accuracy,
        log_loss=whole.log_loss,
        hit_rate=whole.hit_rate,
        net_return=whole.net_return,
        labels=whole.labels,
        probs=whole.probs,
    )
