"""Sidecar pieces without a server: canary routing, the risk guard, input parsing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from signalops.config import RiskSettings
from signalops.serving.inputs import InputError, finite_matrix, records_matrix
from signalops.serving.pool import LoadedModel, SignalModels
from signalops.serving.risk import RiskGuard
from signalops.serving.risk_state import LocalRiskState
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
    with pytest.raises(InputError) as caught:
        finite_matrix(rows, 2, "instances")
    assert caught.value.status == 422 and message in caught.value.message


def test_records_accept_names_or_positional_f_names() -> None:
    names = ("a", "b")
    x = records_matrix([{"b": 2, "a": 1}, {"f0": 3, "f1": 4}], names, "records")
    assert np.array_equal(x, np.array([[1, 2], [3, 4]], dtype=np.float32))
    with pytest.raises(InputError, match=r"missing \['b'\], unknown \['c'\]"):
        records_matrix([{"a": 1, "c": 2}], names, "records")


# --- the edge: every rule and its schema fragment agree ---------------------------------

import re  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

from hypothesis import given  # noqa: E402
from hypothesis import settings as hsettings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from signalops.serving.inputs import (  # noqa: E402
    SYMBOL,
    TIME_PATTERN,
    check_pnl,
    check_time,
    media_type_ok,
)


@hsettings(max_examples=1500, deadline=None)
@given(st.from_regex(TIME_PATTERN, fullmatch=True))
def test_every_time_the_document_allows_is_accepted(value: str) -> None:
    when = check_time(value, "t")
    assert datetime(1969, 12, 30, tzinfo=UTC) < when < datetime(2100, 1, 2, tzinfo=UTC)


@hsettings(max_examples=1500, deadline=None)
@given(st.datetimes(), st.integers(min_value=-23 * 60, max_value=23 * 60))
def test_every_real_time_in_range_matches_the_pattern(naive: datetime, minutes: int) -> None:
    from datetime import timedelta, timezone

    stamp = naive.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat()
    inside = 1970 <= naive.year <= 2099
    assert bool(re.fullmatch(TIME_PATTERN, stamp)) == inside, stamp


@pytest.mark.parametrize(
    "value",
    [
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-11-27T15:00:00",  # no offset: ambiguous
        "2026-11-27",
        "2026-11-27T15:00:00Z\n",
        17,
    ],
)
def test_times_outside_the_contract_are_refused(value: Any) -> None:
    with pytest.raises(InputError, match="RFC 3339"):
        check_time(value, "'features_ts'")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("\u0000", "control character \\(U\\+0000\\) at position 0"),
        ("AA\tPL", "U\\+0009"),
        ("X" * 65, "1 to 64 characters, got 65"),
        ("", "1 to 64 characters, got 0"),
        (5, "must be a string"),
    ],
)
def test_symbols_the_log_cannot_hold_are_refused(value: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        SYMBOL.check(value, "'symbol'")
    assert SYMBOL.check("BRK.B", "'symbol'") == "BRK.B"


@pytest.mark.parametrize("pnl", [1e308, -1e300, float("inf"), float("nan"), True, "0.1", 1.5])
def test_absurd_trade_results_are_refused(pnl: Any) -> None:
    with pytest.raises(InputError, match="'pnl'"):
        check_pnl(pnl, 1.0)
    assert check_pnl(-0.02, 1.0) == -0.02


def test_only_json_media_types_pass() -> None:
    assert media_type_ok(None) and media_type_ok("application/json; charset=utf-8")
    assert media_type_ok("Application/JSON") and media_type_ok("application/vnd.api+json")
    for other in ("text/plain", "application/xml", "multipart/form-data", "text/csv", ""):
        assert not media_type_ok(other), other


def test_a_prediction_row_is_a_row_of_the_predictions_table() -> None:
    """The sidecar's PredictionRow, the log writer's COLUMNS and the warehouse table agree."""
    from dataclasses import fields

    from signalops.serving.predlog import COLUMNS, PredictionRow
    from signalops.warehouse import predictions_table

    assert tuple(predictions_table.columns.keys()) == COLUMNS
    assert tuple(f.name for f in fields(PredictionRow)) == COLUMNS
    row = PredictionRow(*range(len(COLUMNS)))
    assert row.values() == tuple(range(len(COLUMNS)))
