"""Sidecar pieces without a server: canary routing, the risk guard, input parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from signalops.config import RiskSettings
from signalops.serving.app import ApiError, _finite_matrix, _records_matrix
from signalops.serving.pool import LoadedModel, SignalModels
from signalops.serving.risk import LocalRiskState, RiskGuard
from signalops.serving.routing import bucket, route


def _model(version: str) -> LoadedModel:
    return LoadedModel("s", version, None, ("a", "b"), "v1", 12, 0.0)


@pytest.mark.parametrize("weight", [0.01, 0.1, 0.5, 1.0])
def test_canary_share_is_within_two_points_and_sticky(weight: float) -> None:
    models = SignalModels(_model("1"), _model("2"), weight)
    keys = [f"caller-{i}" for i in range(10_000)]
    roles = [route(models, "BTC-USD", k)[1] for k in keys]
    share = roles.count("challenger") / len(roles)
    assert abs(share - weight) <= 0.02
    # Sticky: the same caller and symbol always land on the same model.
    assert [route(models, "BTC-USD", k)[1] for k in keys[:500]] == roles[:500]
    # Raising the weight only moves callers champion -> challenger, never back.
    more = SignalModels(_model("1"), _model("2"), min(1.0, weight + 0.2))
    assert all(
        route(more, "BTC-USD", k)[1] == "challenger"
        for k, r in zip(keys, roles, strict=True)
        if r == "challenger"
    )


def test_shadow_when_weight_is_zero_and_no_challenger() -> None:
    model, role, shadow = route(SignalModels(_model("1"), _model("2"), 0.0), "X", "k")
    assert (model.version, role, shadow and shadow.version) == ("1", "champion", "2")
    model, role, shadow = route(SignalModels(_model("1"), None, 0.7), "X", "k")
    assert (model.version, role, shadow) == ("1", "champion", None)
    assert 0.0 <= bucket("X", "k") < 1.0 and bucket("X", "k") == bucket("X", "k")


MONDAY_NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def _guard(**kw: Any) -> RiskGuard:
    return RiskGuard(RiskSettings(**kw), LocalRiskState())


def test_risk_guard_rules_turn_signals_into_holds_with_reasons() -> None:
    guard = _guard(min_confidence=0.6)
    d = guard.check(["BUY", "SELL", "HOLD"], [0.55, 0.7, 0.5], MONDAY_NOON)
    assert [x.allowed for x in d] == [False, True, True] and "confidence 0.550 < 0.6" in d[0].reason

    hours = _guard(trading_hours=("13:00", "17:00"), timezone="Europe/Berlin")
    assert hours.check(["BUY"], [0.9], MONDAY_NOON)[0].allowed  # 13:00 in Berlin
    assert (
        "outside trading hours"
        in hours.check(["BUY"], [0.9], MONDAY_NOON.replace(hour=17))[0].reason
    )
    weekdays = _guard(trading_days=(0, 1, 2, 3, 4))
    assert (
        "outside trading days (Saturday)"
        in weekdays.check(["BUY"], [0.9], datetime(2026, 11, 28, 12, tzinfo=UTC))[0].reason
    )

    capped = _guard(max_trades_per_day=2)
    assert [x.allowed for x in capped.check(["BUY"] * 3, [0.9] * 3, MONDAY_NOON)] == [
        True,
        True,
        False,
    ]
    assert not capped.check(["SELL"], [0.9], MONDAY_NOON)[0].allowed
    assert capped.check(["SELL"], [0.9], MONDAY_NOON.replace(day=24))[0].allowed  # a new day


@pytest.mark.parametrize(
    ("pnls", "reason"),
    [
        ([-0.03, -0.03], "daily loss"),
        ([0.2, -0.06, -0.05], "drawdown"),
        ([-0.001] * 5, "consecutive losses"),
    ],
)
def test_circuit_breakers(pnls: list[float], reason: str) -> None:
    guard = _guard(max_daily_loss=0.05, max_drawdown=0.1, max_consecutive_losses=5)
    assert guard.check(["BUY"], [0.9], MONDAY_NOON)[0].allowed
    for pnl in pnls:
        guard.trade_result(pnl, MONDAY_NOON)
    decision = guard.check(["BUY"], [0.9], MONDAY_NOON)[0]
    assert not decision.allowed and reason in decision.reason
    guard.reset(MONDAY_NOON)
    assert guard.check(["BUY"], [0.9], MONDAY_NOON)[0].allowed


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([], "non-empty list"),
        ([[1.0]], "row 0 has 1 values, the model takes 2"),
        ([[1.0, "x"]], "row 0, column 1: 'x' is not a number"),
        ([[1.0, True]], "row 0, column 1: True is not a number"),
        ([[1.0, float("nan")]], "row 0, column 1 is not finite"),
        ([[1.0, 1e300]], "overflows float32"),
        ([1.0, 2.0], "row 0 is not a list"),
    ],
)
def test_bad_matrices_say_what_is_wrong(rows: Any, message: str) -> None:
    with pytest.raises(ApiError) as caught:
        _finite_matrix(rows, 2, "instances")
    assert caught.value.status == 422 and message in caught.value.message


def test_records_accept_names_or_positional_f_names() -> None:
    names = ("a", "b")
    x = _records_matrix([{"b": 2, "a": 1}, {"f0": 3, "f1": 4}], names, "records")
    assert np.array_equal(x, np.array([[1, 2], [3, 4]], dtype=np.float32))
    with pytest.raises(ApiError, match=r"missing \['b'\], unknown \['c'\]"):
        _records_matrix([{"a": 1, "c": 2}], names, "records")
