"""The risk guard's position sizing, exposure limits, per-symbol breakers, cooldowns and
summary, on the in-process state (the Redis state: tests/integration/test_risk_workers.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from signalops.config import RiskSettings
from signalops.serving.risk import RiskGuard
from signalops.serving.risk_state import LocalRiskState

NOON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday


def _guard(**kw: Any) -> RiskGuard:
    return RiskGuard(RiskSettings(**kw), LocalRiskState())


def test_size_is_the_edge_scaled_to_the_volatility_target_and_capped() -> None:
    plain = _guard()
    d = plain.check(["BUY", "SELL", "HOLD"], [0.8, 0.65, 0.55], NOON, ["A", "B", "C"])
    assert [x.size for x in d] == [pytest.approx(0.6), pytest.approx(-0.3), 0.0]

    targeted = _guard(volatility_target=0.01, max_position_size=0.5)
    d = targeted.check(
        ["BUY", "BUY", "BUY"], [0.8, 0.8, 0.8], NOON, ["A", "B", "C"], [0.02, 0.004, 0]
    )
    # 0.6 * 0.01/0.02 = 0.3; 0.6 * 0.01/0.004 = 1.5 -> capped at 0.5; no volatility: the edge
    assert [x.size for x in d] == [pytest.approx(0.3), 0.5, 0.5]

    floor = _guard(min_position_size=0.25)
    d = floor.check(["BUY"], [0.6], NOON, ["A"])[0]  # edge 0.2
    assert not d.allowed and "position size 0.2000 < 0.25" in d.reason


def test_exposure_limits_per_symbol_and_in_total() -> None:
    guard = _guard(max_symbol_exposure=0.4, max_total_exposure=1.0)
    d = guard.check(["BUY", "SELL", "BUY"], [0.9, 0.9, 0.9], NOON, ["A", "B", "C"])
    # 0.8 each, capped at 0.4 per symbol; C gets what is left of the total: 0.2
    assert [x.size for x in d] == [0.4, -0.4, pytest.approx(0.2)]
    full = guard.check(["BUY"], [0.9], NOON, ["D"])[0]
    assert not full.allowed and "total exposure 1.0000 leaves no room under 1.0" in full.reason
    # a new signal on a symbol replaces its position instead of adding to it
    again = guard.check(["SELL"], [0.9], NOON, ["A"])[0]
    assert again.allowed and again.size == -0.4
    # the symbol's trade result closes its position: room again
    guard.trade_result(0.01, NOON, "B")
    assert guard.check(["BUY"], [0.9], NOON, ["D"])[0].size == 0.4


def test_positions_stop_counting_after_their_ttl() -> None:
    guard = _guard(max_total_exposure=0.5, position_ttl_s=60)
    assert guard.check(["BUY"], [0.9], NOON, ["A"])[0].size == 0.5
    assert not guard.check(["BUY"], [0.9], NOON + timedelta(seconds=59), ["B"])[0].allowed
    assert guard.check(["BUY"], [0.9], NOON + timedelta(seconds=61), ["B"])[0].size == 0.5


def test_a_symbols_breaker_holds_only_that_symbol() -> None:
    guard = _guard(max_consecutive_losses=2)
    for symbol, pnl in (("A", -0.001), ("B", 0.002), ("A", -0.001)):
        guard.trade_result(pnl, NOON, symbol)
    # A lost twice in a row; the account's streak is 1 (B's win broke it)
    d = guard.check(["BUY", "BUY"], [0.9, 0.9], NOON, ["A", "B"])
    assert not d[0].allowed and "circuit breaker (A): 2 consecutive losses" in d[0].reason
    assert d[1].allowed
    guard.trade_result(0.001, NOON, "A")  # A's win closes A's breaker
    assert guard.check(["BUY"], [0.9], NOON, ["A"])[0].allowed


def test_account_streak_blocks_every_symbol() -> None:
    guard = _guard(max_consecutive_losses=3)
    for symbol in ("A", "B", "C"):
        guard.trade_result(-0.001, NOON, symbol)
    d = guard.check(["BUY", "SELL"], [0.9, 0.9], NOON, ["D", None])
    assert not any(x.allowed for x in d) and "circuit breaker: 3 consecutive losses" in d[0].reason


def test_cooldown_closes_a_tripped_breaker_once() -> None:
    guard = _guard(max_daily_loss=0.05, breaker_cooldown_s=30)
    guard.trade_result(-0.06, NOON)
    state = guard.state.get(guard.day(NOON))
    (trip,) = guard.trips(state)
    assert trip.symbol is None and "daily loss" in trip.reason and trip.tripped_at == 0
    assert guard.state.mark_tripped(None, NOON.timestamp())
    assert not guard.state.mark_tripped(None, NOON.timestamp() + 1)  # noted once
    assert guard.due_cooldowns(NOON + timedelta(seconds=29)) == []
    summary = guard.summary(NOON + timedelta(seconds=29))
    assert summary["total"]["breaker"]["open"]
    assert summary["total"]["breaker"]["resets_at"] == "2026-11-23T12:00:30+00:00"
    closed = guard.due_cooldowns(NOON + timedelta(seconds=30))
    assert [t.reason for t in closed] == [trip.reason]
    assert guard.due_cooldowns(NOON + timedelta(seconds=31)) == []  # closed once
    assert guard.check(["BUY"], [0.9], NOON + timedelta(seconds=31))[0].allowed
    # the day's loss counts from the cooldown: 0.05 more trips it again
    guard.trade_result(-0.04, NOON + timedelta(seconds=40))
    assert guard.check(["BUY"], [0.9], NOON + timedelta(seconds=41))[0].allowed
    guard.trade_result(-0.02, NOON + timedelta(seconds=50))
    assert not guard.check(["BUY"], [0.9], NOON + timedelta(seconds=51))[0].allowed
    assert guard.summary(NOON)["total"]["realized_pnl_today"] == pytest.approx(-0.12)


def test_a_trip_closed_by_a_new_day_is_forgotten() -> None:
    guard = _guard(max_daily_loss=0.05)  # no cooldown: the daily loss closes next day
    guard.trade_result(-0.06, NOON)
    assert guard.state.mark_tripped(None, NOON.timestamp())
    assert guard.due_cooldowns(NOON + timedelta(hours=1)) == []
    tomorrow = NOON + timedelta(days=1)
    assert guard.due_cooldowns(tomorrow) == []
    state = guard.state.get(guard.day(tomorrow))
    assert state["tripped_at"] == 0  # the next trip is noted (and alerted) again
    guard.trade_result(-0.06, tomorrow)
    assert guard.state.mark_tripped(None, tomorrow.timestamp())


def test_summary_per_symbol_and_total() -> None:
    guard = _guard(max_total_exposure=2.0)
    guard.check(["BUY", "SELL", "BUY"], [0.9, 0.7, 0.8], NOON, ["A", "B", None])
    guard.trade_result(0.02, NOON, "A")
    guard.trade_result(-0.01, NOON, "B")
    s = guard.summary(NOON)
    assert s["day"] == "2026-11-23" and s["market"] == {"open": True, "reason": None}
    total = s["total"]
    assert total["trades_today"] == 3 and total["realized_pnl_today"] == pytest.approx(0.01)
    assert total["drawdown"] == pytest.approx(0.01) and total["consecutive_losses"] == 1
    assert total["exposure"] == pytest.approx(0.6)  # A and B closed; the row without symbol
    a, b, none = s["symbols"]["A"], s["symbols"]["B"], s["symbols"]["-"]
    assert (a["trades_today"], a["realized_pnl_today"], a["position"]) == (1, 0.02, 0.0)
    assert (b["drawdown"], b["consecutive_losses"]) == (pytest.approx(0.01), 1)
    assert none["position"] == pytest.approx(0.6) and not none["breaker"]["open"]
    assert s["limits"]["max_total_exposure"] == 2.0


def test_the_documented_strict_profile_loads_and_holds_low_confidence() -> None:
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).resolve().parents[2] / "docs" / "serving.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "risk:" in b]
    guard = RiskGuard(RiskSettings(**yaml.safe_load(block)["serving"]["risk"]), LocalRiskState())
    open_at = datetime(2026, 11, 23, 14, 0, tzinfo=UTC)  # 09:00 in Bogota, a Monday
    d = guard.check(["BUY", "BUY"], [0.58, 0.7], open_at, ["A", "B"], [0.002, 0.004])
    assert not d[0].allowed and "confidence 0.580 < 0.6" in d[0].reason
    assert d[1].size == pytest.approx(0.2)  # edge 0.4 x 0.002 / 0.004
    closed = guard.check(["BUY"], [0.9], open_at.replace(hour=19), ["B"])[0]
    assert "outside trading hours" in closed.reason
