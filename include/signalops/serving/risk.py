"""The risk guard: a signal that breaks a rule becomes HOLD, with the rule as its reason.

Rules (``serving.risk``): minimum confidence; trading hours and days in a timezone; a
maximum number of trades (BUY/SELL signals let through) per day; a circuit breaker on the
day's loss, the drawdown from the equity peak, and consecutive losing trades, fed by
``POST /v1/risk/trade-result``. State lives in Redis when ``online_store.redis_url`` is
set (shared by every worker process), else in this process.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from signalops.config import RiskSettings


@dataclass(frozen=True)
class RiskDecision:
    allowed: bool
    reason: str  # "ok" or the rule that blocked it

    def as_text(self) -> str:
        return "allowed" if self.allowed else f"blocked: {self.reason}"


class RiskState(Protocol):
    def get(self, day: str) -> dict[str, float]: ...
    def incr_trades(self, day: str, by: int) -> int: ...
    def record_trade(self, day: str, pnl: float) -> dict[str, float]: ...
    def reset(self, day: str) -> None: ...


class LocalRiskState:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[str, dict[str, float]] = {}
        self._equity = {"equity": 0.0, "peak": 0.0, "consecutive_losses": 0.0}

    def _day(self, day: str) -> dict[str, float]:
        return self._days.setdefault(day, {"trades": 0.0, "pnl": 0.0})

    def get(self, day: str) -> dict[str, float]:
        with self._lock:
            return {**self._day(day), **self._equity}

    def incr_trades(self, day: str, by: int) -> int:
        with self._lock:
            self._day(day)["trades"] += by
            return int(self._day(day)["trades"])

    def record_trade(self, day: str, pnl: float) -> dict[str, float]:
        with self._lock:
            self._day(day)["pnl"] += pnl
            e = self._equity
            e["equity"] += pnl
            e["peak"] = max(e["peak"], e["equity"])
            e["consecutive_losses"] = e["consecutive_losses"] + 1 if pnl < 0 else 0.0
            return {**self._day(day), **e}

    def reset(self, day: str) -> None:
        with self._lock:
            self._days.pop(day, None)
            self._equity = {"equity": 0.0, "peak": 0.0, "consecutive_losses": 0.0}


class RedisRiskState:
    """The same state in Redis hashes: ``<prefix>:risk:day:<day>`` and ``<prefix>:risk:equity``."""

    _RECORD = """
    local day, eq = KEYS[1], KEYS[2]
    local pnl = tonumber(ARGV[1])
    redis.call('HINCRBYFLOAT', day, 'pnl', pnl)
    redis.call('EXPIRE', day, 172800)
    local equity = tonumber(redis.call('HINCRBYFLOAT', eq, 'equity', pnl))
    local peak = tonumber(redis.call('HGET', eq, 'peak') or '0')
    if equity > peak then redis.call('HSET', eq, 'peak', tostring(equity)) end
    if pnl < 0 then redis.call('HINCRBY', eq, 'consecutive_losses', 1)
    else redis.call('HSET', eq, 'consecutive_losses', 0) end
    return 1
    """

    def __init__(self, url: str, prefix: str):
        import redis

        # Short timeouts: a request must not hang on a Redis that is gone.
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._record = self.client.register_script(self._RECORD)

    def _keys(self, day: str) -> tuple[str, str]:
        return f"{self.prefix}:risk:day:{day}", f"{self.prefix}:risk:equity"

    def get(self, day: str) -> dict[str, float]:
        day_key, eq_key = self._keys(day)
        with self.client.pipeline() as pipe:
            pipe.hgetall(day_key)
            pipe.hgetall(eq_key)
            day_values, eq_values = pipe.execute()
        out = {"trades": 0.0, "pnl": 0.0, "equity": 0.0, "peak": 0.0, "consecutive_losses": 0.0}
        for raw in (day_values, eq_values):
            out.update({k.decode(): float(v) for k, v in raw.items()})
        return out

    def incr_trades(self, day: str, by: int) -> int:
        day_key, _ = self._keys(day)
        with self.client.pipeline() as pipe:
            pipe.hincrby(day_key, "trades", by)
            pipe.expire(day_key, 172800)
            return int(pipe.execute()[0])

    def record_trade(self, day: str, pnl: float) -> dict[str, float]:
        self._record(keys=list(self._keys(day)), args=[repr(float(pnl))])
        return self.get(day)

    def reset(self, day: str) -> None:
        self.client.delete(*self._keys(day))


class CachedRiskState:
    """Shared (Redis) state without a network round trip on the request path.

    Reads come from a snapshot that a background thread refreshes every ``refresh_s``;
    trade counts are added locally and pushed with one HINCRBY per refresh. So the shared
    limits hold across worker processes to within one refresh interval, and a request never
    waits on Redis (waiting there also costs a GIL hand-back from other threads).
    """

    def __init__(self, inner: RiskState, refresh_s: float = 0.1, health: Any = None):
        self.inner = inner
        self.refresh_s = refresh_s
        self.health = health  # a serving.health.Dependency: told up or down after each sync
        self._lock = threading.Lock()
        self._snapshot: dict[str, dict[str, float]] = {}
        self._pending: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="risk-state", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self.sync()
            except Exception as exc:  # Redis down: keep the last snapshot, retry
                if self.health is not None:
                    self.health.failed(exc)  # logs the change once, not every 100 ms
                else:
                    import logging

                    logging.getLogger(__name__).warning("risk state: sync failed: %s", exc)
            else:
                if self.health is not None:
                    self.health.ok()

    def sync(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            for day in list(pending):
                self.inner.incr_trades(day, pending[day])
                del pending[day]
        finally:  # Redis down: the counts not pushed wait for the next sync
            if pending:
                with self._lock:
                    for day, by in pending.items():
                        self._pending[day] = self._pending.get(day, 0) + by
        days = set(self._snapshot) | set(pending)
        fresh = {day: self.inner.get(day) for day in days}
        with self._lock:
            self._snapshot.update(fresh)

    def _known(self, day: str) -> dict[str, float]:
        snap = self._snapshot.get(day)
        if snap is None:  # first request of a day in this process: one blocking read
            snap = self.inner.get(day)
            with self._lock:
                self._snapshot[day] = snap
        return snap

    def get(self, day: str) -> dict[str, float]:
        snap = dict(self._known(day))
        snap["trades"] += self._pending.get(day, 0)
        return snap

    def incr_trades(self, day: str, by: int) -> int:
        with self._lock:
            self._pending[day] = self._pending.get(day, 0) + by
        return int(self.get(day)["trades"])

    def record_trade(self, day: str, pnl: float) -> dict[str, float]:
        state = self.inner.record_trade(day, pnl)
        with self._lock:
            self._snapshot[day] = dict(state)
        return self.get(day)

    def reset(self, day: str) -> None:
        self.sync()
        self.inner.reset(day)
        with self._lock:
            self._snapshot.pop(day, None)
            self._pending.pop(day, None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sync()


class RiskGuard:
    def __init__(self, settings: RiskSettings, state: RiskState):
        self.settings = settings
        self.state = state
        self.tz = ZoneInfo(settings.timezone)
        hours = settings.trading_hours
        self.hours = (time.fromisoformat(hours[0]), time.fromisoformat(hours[1])) if hours else None
        self._calendar_cache: tuple[int, str, str | None] = (-1, "", None)

    def day(self, now: datetime) -> str:
        return now.astimezone(self.tz).date().isoformat()

    def _calendar(self, now: datetime) -> tuple[str, str | None]:
        """The trading day and the market-hours rule that blocks trading (None: open),
        worked out once per second (time zone conversion is on every request's path)."""
        second = int(now.timestamp())
        cached = self._calendar_cache  # one tuple: a consistent read from any thread
        if cached[0] == second:
            return cached[1], cached[2]
        cfg = self.settings
        local = now.astimezone(self.tz)
        rule = None
        if local.weekday() not in cfg.trading_days:
            rule = f"outside trading days ({local.strftime('%A')})"
        elif self.hours and not (self.hours[0] <= local.time() < self.hours[1]):
            rule = f"outside trading hours {self.hours[0]}-{self.hours[1]} {cfg.timezone}"
        self._calendar_cache = (second, local.date().isoformat(), rule)
        return self._calendar_cache[1], rule

    def check(
        self, signals: list[str], confidences: list[float], now: datetime
    ) -> list[RiskDecision]:
        """Decide for each BUY/SELL signal; HOLD passes through as allowed."""
        cfg = self.settings
        day, market_rule = self._calendar(now)
        state = self.state.get(day)
        breaker = self.breaker(state)
        decisions = []
        trades = int(state["trades"])
        wanted = 0
        for signal, confidence in zip(signals, confidences, strict=True):
            if signal == "HOLD":
                decisions.append(RiskDecision(True, "ok"))
            elif confidence < cfg.min_confidence:
                decisions.append(
                    RiskDecision(False, f"confidence {confidence:.3f} < {cfg.min_confidence}")
                )
            elif market_rule or breaker:
                decisions.append(RiskDecision(False, str(market_rule or breaker)))
            elif trades + wanted >= cfg.max_trades_per_day:
                decisions.append(
                    RiskDecision(False, f"max trades per day ({cfg.max_trades_per_day}) reached")
                )
            else:
                wanted += 1
                decisions.append(RiskDecision(True, "ok"))
        if wanted:
            self.state.incr_trades(day, wanted)
        return decisions

    def breaker(self, state: dict[str, float]) -> str | None:
        """Why the circuit breaker is open for this day's state (None: closed)."""
        cfg = self.settings
        if state["pnl"] <= -cfg.max_daily_loss:
            return f"circuit breaker: daily loss {state['pnl']:.4f} <= -{cfg.max_daily_loss}"
        if state["peak"] - state["equity"] >= cfg.max_drawdown:
            drawdown = state["peak"] - state["equity"]
            return f"circuit breaker: drawdown {drawdown:.4f} >= {cfg.max_drawdown}"
        if state["consecutive_losses"] >= cfg.max_consecutive_losses:
            return f"circuit breaker: {int(state['consecutive_losses'])} consecutive losses"
        return None

    def breaker_now(self, now: datetime) -> str | None:
        return self.breaker(self.state.get(self.day(now)))

    def trade_result(self, pnl: float, now: datetime) -> dict[str, Any]:
        return self.state.record_trade(self.day(now), pnl)

    def reset(self, now: datetime) -> None:
        self.state.reset(self.day(now))
