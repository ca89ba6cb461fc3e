"""What the canary's guards see at a step: both sides' live figures, from the warehouse.

``step_metrics`` gathers, for a rollout row (``rollouts``), the champion's and the
challenger's ``LiveMetrics`` (``signalops.rollout.outcomes.live_metrics``): predictions,
latency and scores since the step started; outcomes (accuracy, log loss, ...) since the
rollout started, as they mature slowly. In the shadow step (weight 0) also the agreement
of the shadow with the champion (``shadow_agreement``). ``signalops.rollout.guards.judge``
judges them.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np

from signalops.config import Settings
from signalops.rollout.outcomes import LiveMetrics, live_metrics
from signalops.warehouse import Warehouse
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
    if champ.predictions == 0:
        champ = replace(champ_all, scores=np.empty(0))
    champ = _with_outcomes(champ, champ_all)
    chall = metrics(version, roles, step_since)
    chall_all = metrics(version, ("shadow", "challenger"), since)
    agreement = (
        shadow_agreement(settings, warehouse, signal, row, step_since, now) if shadow else None
    )
    return champ, _with_outcomes(chall, chall_all), agreement


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
