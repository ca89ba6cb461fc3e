"""The risk guard across two sidecar processes sharing Redis: exposure limits, the daily
trade limit, breakers (one alert per trip, whichever worker saw it), the cooldown that
closes them, and ``GET /v1/risk/summary`` agreeing on both."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from signalops.config import load_settings
from signalops.registry import Registry
from signalops.registry import contracts as c
from tests.integration.test_swaps import NAMES, register
from tests.sidecar_process import free_port, running_sidecar
from tests.slack_recorder import SlackRecorder, slack_recorder

pytestmark = pytest.mark.integration

TOKEN = "risk-test-token"
SYNC_S = 0.6  # several of the shared state's 0.1 s refreshes
# sigmoid(0.13 * 3 * 6) = 0.91: a BUY with confidence 0.91, edge 0.82
UP = dict.fromkeys(NAMES, 6.0)


@pytest.fixture
def slack() -> Iterator[SlackRecorder]:
    with slack_recorder() as recorder:
        yield recorder


@pytest.fixture
def workers(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str, slack: SlackRecorder
) -> Iterator[tuple[str, str]]:
    base = {
        "SIGNALOPS_STATE_DIR": str(tmp_path / "state"),
        "SIGNALOPS_SIGNAL_NAME": "risk_workers",
        "SIGNALOPS_WAREHOUSE__URL": pg_url,
        "SIGNALOPS_ONLINE_STORE__REDIS_URL": redis_url,
        "SIGNALOPS_ONLINE_STORE__KEY_PREFIX": redis_prefix,
        "SIGNALOPS_SERVING__ADMIN_TOKEN": TOKEN,
        "SIGNALOPS_SERVING__RISK__MAX_TRADES_PER_DAY": "4",
        "SIGNALOPS_SERVING__RISK__MAX_SYMBOL_EXPOSURE": "0.5",
        "SIGNALOPS_SERVING__RISK__MAX_TOTAL_EXPOSURE": "1.0",
        "SIGNALOPS_SERVING__RISK__MAX_CONSECUTIVE_LOSSES": "2",
        "SIGNALOPS_SERVING__RISK__BREAKER_COOLDOWN_S": "3",
        "SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL": f"{slack.url}/hooks/risk",
    }
    settings = load_settings(env=base)
    registry = Registry(settings)
    registry.set_alias(c.ALIAS_CHAMPION, register(registry, tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
    ports = free_port(), free_port()
    with (
        running_sidecar(
            {**env, **base, "SIGNALOPS_SERVING__PORT": str(ports[0])}, tmp_path, tmp_path / "a.log"
        ) as (a, _),
        running_sidecar(
            {**env, **base, "SIGNALOPS_SERVING__PORT": str(ports[1])}, tmp_path, tmp_path / "b.log"
        ) as (b, _),
    ):
        yield a, b


def _signal(url: str, symbol: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/v1/signals", json={"symbol": symbol, "features": UP}, timeout=10)
    assert r.status_code == 200, r.text
    (prediction,) = r.json()["predictions"]
    assert prediction["probability"] > 0.9
    time.sleep(SYNC_S)  # pushed to Redis, and the other worker's snapshot refreshed
    return dict(prediction["risk"], signal=prediction["signal"])


def _trade(url: str, pnl: float, symbol: str) -> None:
    r = httpx.post(
        f"{url}/v1/risk/trade-result",
        json={"pnl": pnl, "symbol": symbol},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    time.sleep(SYNC_S)


def _summary(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/risk/summary", timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _texts(slack: SlackRecorder, needle: str) -> list[str]:
    return [t for t in (json.dumps(r.body) for r in slack.requests) if needle in t]


def _wait(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_limits_and_breakers_hold_across_two_workers(
    workers: tuple[str, str], slack: SlackRecorder
) -> None:
    a, b = workers
    # Exposure: each symbol capped at 0.5; the total (1.0) is full after two symbols,
    # whichever worker let them through.
    assert _signal(a, "AAA") == {
        "allowed": True, "reason": "ok", "position_size": 0.5, "signal": "BUY"
    }  # fmt: skip
    assert _signal(b, "BBB")["position_size"] == 0.5
    full = _signal(a, "CCC")
    assert full["signal"] == "HOLD" and "total exposure 1.0000 leaves no room" in full["reason"]

    # Two losses on AAA, reported to different workers: AAA's breaker and the account's
    # (its streak is 2 as well) trip on the second; each alerts once.
    _trade(a, -0.01, "AAA")
    _trade(b, -0.01, "AAA")
    _trade(a, -0.01, "AAA")  # still open: no new alert
    held = _signal(a, "DDD")
    assert held["signal"] == "HOLD" and "circuit breaker: 3 consecutive losses" in held["reason"]
    for url in (a, b):
        s = _summary(url)
        assert s["total"]["breaker"]["open"] and s["total"]["consecutive_losses"] == 3
        assert s["total"]["breaker"]["resets_at"] is not None
        assert s["symbols"]["AAA"]["breaker"]["open"] and s["symbols"]["AAA"]["position"] == 0
        assert s["symbols"]["BBB"]["position"] == 0.5 and s["total"]["exposure"] == 0.5
        assert s["total"]["trades_today"] == 2 and s["symbols"]["AAA"]["trades_today"] == 1
        assert s["total"]["realized_pnl_today"] == pytest.approx(-0.03)

    # The cooldown (3 s) closes both breakers, once, and says so.
    _wait(lambda: not _summary(b)["total"]["breaker"]["open"], timeout=15)
    _wait(lambda: not _summary(a)["symbols"]["AAA"]["breaker"]["open"], timeout=5)
    _wait(lambda: len(_texts(slack, "closed after its cooldown")) >= 2, timeout=10)
    tripped = _texts(slack, "risk circuit breaker tripped")
    assert len(tripped) == 2, tripped
    assert sum("(AAA)" in t for t in tripped) == 1
    assert len(_texts(slack, "closed after its cooldown")) == 2

    # The day's trade limit (4) counts both workers' trades.
    assert _signal(b, "AAA")["allowed"]
    assert _signal(a, "AAA")["allowed"]
    over = _signal(b, "EEE")
    assert over["signal"] == "HOLD" and over["reason"] == "max trades per day (4) reached"
    assert _summary(a)["total"]["trades_today"] == 4
