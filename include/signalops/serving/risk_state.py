"""Where the risk guard keeps its numbers: in this process, or in Redis shared by every
worker (read through a snapshot that a background thread refreshes).

The state is a flat mapping of floats. Account-wide figures have plain names (``trades``,
``pnl``, ``equity``, ``peak``, ``consecutive_losses``, ``tripped_at``, ``pnl_base``);
a symbol's own figures carry the symbol after a bar (``pnl|EURUSD``), and so do the
suggested positions (``pos|EURUSD``: signed fraction of equity, ``pos_ts|EURUSD``: when it
was suggested, epoch seconds). Day figures (trades, P&L) live under the trading day;
equity, peaks, losing streaks, breaker trips and positions carry over from day to day.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

log = logging.getLogger(__name__)

# Figures that belong to a trading day; everything else carries over.
DAY_FIELDS = ("trades", "pnl", "pnl_base")
DAY_TTL_S = 172800  # a day's hash outlives its day by one (the summary may still read it)


def scoped(name: str, symbol: str | None) -> str:
    """The field of ``name`` for the account (``symbol`` None) or for one symbol."""
    return name if symbol is None else f"{name}|{symbol}"


def symbols_in(state: dict[str, float]) -> list[str]:
    """Every symbol the state holds a figure for."""
    return sorted({k.split("|", 1)[1] for k in state if "|" in k})


class RiskState(Protocol):
    def get(self, day: str) -> dict[str, float]: ...

    def commit(
        self, day: str, trades: dict[str, int], positions: dict[str, tuple[float, float]]
    ) -> None:
        """Add let-through trades (key "" = the account, else a symbol) and set positions
        (symbol -> (signed size, epoch seconds))."""

    def record_trade(self, day: str, pnl: float, symbol: str | None) -> dict[str, float]: ...

    def mark_tripped(self, symbol: str | None, at: float) -> bool:
        """Note when a breaker tripped; True only for the call that noted it (one alert
        per trip, across workers)."""

    def cool_down(self, day: str, symbol: str | None, tripped_at: float) -> bool:
        """Close a breaker whose cooldown has run: its losing streak, drawdown and the day's
        loss count from now. True only for the call that did it (and only if the breaker
        still is the trip of ``tripped_at``)."""

    def clear_trip(self, symbol: str | None, tripped_at: float) -> None:
        """Forget a trip whose breaker closed without a cooldown (a new trading day)."""

    def reset(self, day: str) -> None: ...


def _zero() -> dict[str, float]:
    return {"trades": 0.0, "pnl": 0.0, "equity": 0.0, "peak": 0.0, "consecutive_losses": 0.0}


class LocalRiskState:
    """The state of one process (no Redis configured)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[str, dict[str, float]] = {}
        self._lasting: dict[str, float] = {}

    def get(self, day: str) -> dict[str, float]:
        with self._lock:
            return {**_zero(), **self._lasting, **self._days.get(day, {})}

    def commit(
        self, day: str, trades: dict[str, int], positions: dict[str, tuple[float, float]]
    ) -> None:
        with self._lock:
            d = self._days.setdefault(day, {})
            for scope, n in trades.items():
                field = scoped("trades", scope or None)
                d[field] = d.get(field, 0.0) + n
            for symbol, (size, at) in positions.items():
                self._lasting[scoped("pos", symbol)] = size
                self._lasting[scoped("pos_ts", symbol)] = at

    def record_trade(self, day: str, pnl: float, symbol: str | None) -> dict[str, float]:
        with self._lock:
            d, e = self._days.setdefault(day, {}), self._lasting
            for scope in (None, symbol) if symbol else (None,):
                pnl_f, eq_f = scoped("pnl", scope), scoped("equity", scope)
                peak_f, loss_f = scoped("peak", scope), scoped("consecutive_losses", scope)
                d[pnl_f] = d.get(pnl_f, 0.0) + pnl
                e[eq_f] = e.get(eq_f, 0.0) + pnl
                e[peak_f] = max(e.get(peak_f, 0.0), e[eq_f])
                e[loss_f] = e.get(loss_f, 0.0) + 1 if pnl < 0 else 0.0
            if symbol:  # the position this trade closed
                e[scoped("pos", symbol)] = 0.0
        return self.get(day)

    def mark_tripped(self, symbol: str | None, at: float) -> bool:
        with self._lock:
            field = scoped("tripped_at", symbol)
            if self._lasting.get(field):
                return False
            self._lasting[field] = at
            return True

    def cool_down(self, day: str, symbol: str | None, tripped_at: float) -> bool:
        with self._lock:
            e, d = self._lasting, self._days.setdefault(day, {})
            if e.get(scoped("tripped_at", symbol)) != tripped_at:
                return False
            e[scoped("tripped_at", symbol)] = 0.0
            e[scoped("consecutive_losses", symbol)] = 0.0
            e[scoped("peak", symbol)] = e.get(scoped("equity", symbol), 0.0)
            d[scoped("pnl_base", symbol)] = d.get(scoped("pnl", symbol), 0.0)
            return True

    def clear_trip(self, symbol: str | None, tripped_at: float) -> None:
        with self._lock:
            if self._lasting.get(scoped("tripped_at", symbol)) == tripped_at:
                self._lasting[scoped("tripped_at", symbol)] = 0.0

    def reset(self, day: str) -> None:
        with self._lock:
            self._days.pop(day, None)
            self._lasting = {}


class RedisRiskState:
    """The same state in two Redis hashes: ``<prefix>:risk:day:<day>`` and
    ``<prefix>:risk:equity``; every change is one atomic script or command."""

    _RECORD = """
    local day, eq = KEYS[1], KEYS[2]
    local pnl = tonumber(ARGV[1])
    for i = 2, #ARGV do
      local sfx = ARGV[i]
      redis.call('HINCRBYFLOAT', day, 'pnl' .. sfx, pnl)
      local equity = tonumber(redis.call('HINCRBYFLOAT', eq, 'equity' .. sfx, pnl))
      local peak = tonumber(redis.call('HGET', eq, 'peak' .. sfx) or '0')
      if equity > peak then redis.call('HSET', eq, 'peak' .. sfx, tostring(equity)) end
      if pnl < 0 then redis.call('HINCRBY', eq, 'consecutive_losses' .. sfx, 1)
      else redis.call('HSET', eq, 'consecutive_losses' .. sfx, 0) end
      if sfx ~= '' then redis.call('HSET', eq, 'pos' .. sfx, 0) end
    end
    redis.call('EXPIRE', day, tonumber(ARGV[#ARGV + 1] or '172800'))
    return 1
    """
    _COOL = """
    local day, eq = KEYS[1], KEYS[2]
    local sfx, at = ARGV[1], ARGV[2]
    if redis.call('HGET', eq, 'tripped_at' .. sfx) ~= at then return 0 end
    redis.call('HSET', eq, 'tripped_at' .. sfx, 0, 'consecutive_losses' .. sfx, 0,
               'peak' .. sfx, redis.call('HGET', eq, 'equity' .. sfx) or '0')
    redis.call('HSET', day, 'pnl_base' .. sfx, redis.call('HGET', day, 'pnl' .. sfx) or '0')
    redis.call('EXPIRE', day, 172800)
    return 1
    """
    _MARK = """
    local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
    if current ~= 0 then return 0 end
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
    return 1
    """

    _CLEAR = """
    if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
      redis.call('HSET', KEYS[1], ARGV[1], 0)
    end
    return 1
    """

    def __init__(self, url: str, prefix: str):
        import redis

        # Short timeouts: a request must not hang on a Redis that is gone.
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._record = self.client.register_script(self._RECORD)
        self._cool = self.client.register_script(self._COOL)
        self._mark = self.client.register_script(self._MARK)
        self._clear = self.client.register_script(self._CLEAR)

    def _keys(self, day: str) -> list[str]:
        return [f"{self.prefix}:risk:day:{day}", f"{self.prefix}:risk:equity"]

    def get(self, day: str) -> dict[str, float]:
        day_key, eq_key = self._keys(day)
        with self.client.pipeline() as pipe:
            pipe.hgetall(day_key)
            pipe.hgetall(eq_key)
            day_values, eq_values = pipe.execute()
        out = _zero()
        for raw in (eq_values, day_values):
            out.update({k.decode(): float(v) for k, v in raw.items()})
        return out

    def commit(
        self, day: str, trades: dict[str, int], positions: dict[str, tuple[float, float]]
    ) -> None:
        day_key, eq_key = self._keys(day)
        with self.client.pipeline() as pipe:
            for scope, n in trades.items():
                pipe.hincrby(day_key, scoped("trades", scope or None), n)
            if trades:
                pipe.expire(day_key, DAY_TTL_S)
            if positions:
                mapping: dict[str | bytes, bytes | float | int | str] = {}
                for symbol, (size, at) in positions.items():
                    mapping[scoped("pos", symbol)] = repr(size)
                    mapping[scoped("pos_ts", symbol)] = repr(at)
                pipe.hset(eq_key, mapping=mapping)
            pipe.execute()

    def record_trade(self, day: str, pnl: float, symbol: str | None) -> dict[str, float]:
        suffixes = ["", f"|{symbol}"] if symbol else [""]
        self._record(keys=self._keys(day), args=[repr(float(pnl)), *suffixes])
        return self.get(day)

    def mark_tripped(self, symbol: str | None, at: float) -> bool:
        field = scoped("tripped_at", symbol)
        return bool(self._mark(keys=[self._keys("")[1]], args=[field, repr(at)]))

    def cool_down(self, day: str, symbol: str | None, tripped_at: float) -> bool:
        sfx = f"|{symbol}" if symbol else ""
        return bool(self._cool(keys=self._keys(day), args=[sfx, repr(tripped_at)]))

    def clear_trip(self, symbol: str | None, tripped_at: float) -> None:
        field = scoped("tripped_at", symbol)
        self._clear(keys=[self._keys("")[1]], args=[field, repr(tripped_at)])

    def reset(self, day: str) -> None:
        self.client.delete(*self._keys(day))


class CachedRiskState:
    """Shared (Redis) state without a network round trip on the request path.

    Reads come from a snapshot that a background thread refreshes every ``refresh_s``;
    trade counts and positions are kept locally and pushed with one pipeline per refresh.
    So the shared limits hold across worker processes to within one refresh interval, and
    a request never waits on Redis (waiting there also costs a GIL hand-back from other
    threads). Trade results, trips, cooldowns and resets go straight to Redis.
    """

    def __init__(self, inner: RedisRiskState, refresh_s: float = 0.1, health: Any = None):
        self.inner = inner
        self.refresh_s = refresh_s
        self.health = health  # a serving.health.Dependency: told up or down after each sync
        self._lock = threading.Lock()
        self._snapshot: dict[str, dict[str, float]] = {}
        self._trades: dict[str, dict[str, int]] = {}  # day -> scope -> count not pushed
        self._positions: dict[str, tuple[float, float]] = {}  # not pushed
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
                    log.warning("risk state: sync failed: %s", exc)
            else:
                if self.health is not None:
                    self.health.ok()

    def sync(self) -> None:
        with self._lock:
            trades, self._trades = self._trades, {}
            positions, self._positions = self._positions, {}
        days = set(self._snapshot) | set(trades)
        try:
            for day in list(trades):
                self.inner.commit(day, trades[day], {})
                del trades[day]
            if positions:
                self.inner.commit("", {}, positions)
                positions = {}
        finally:  # Redis down: what was not pushed waits for the next sync
            if trades or positions:
                with self._lock:
                    for day, counts in trades.items():
                        mine = self._trades.setdefault(day, {})
                        for scope, n in counts.items():
                            mine[scope] = mine.get(scope, 0) + n
                    self._positions = {**positions, **self._positions}
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
        for scope, n in self._trades.get(day, {}).items():
            field = scoped("trades", scope or None)
            snap[field] = snap.get(field, 0.0) + n
        for symbol, (size, at) in list(self._positions.items()):
            snap[scoped("pos", symbol)] = size
            snap[scoped("pos_ts", symbol)] = at
        return snap

    def commit(
        self, day: str, trades: dict[str, int], positions: dict[str, tuple[float, float]]
    ) -> None:
        with self._lock:
            mine = self._trades.setdefault(day, {})
            for scope, n in trades.items():
                mine[scope] = mine.get(scope, 0) + n
            self._positions.update(positions)

    def _refresh(self, day: str) -> dict[str, float]:
        state = self.inner.get(day)
        with self._lock:
            self._snapshot[day] = dict(state)
        return self.get(day)

    def record_trade(self, day: str, pnl: float, symbol: str | None) -> dict[str, float]:
        self.sync()  # this worker's own trades and positions first: the trade closes one
        self.inner.record_trade(day, pnl, symbol)
        return self._refresh(day)

    def mark_tripped(self, symbol: str | None, at: float) -> bool:
        return self.inner.mark_tripped(symbol, at)

    def cool_down(self, day: str, symbol: str | None, tripped_at: float) -> bool:
        done = self.inner.cool_down(day, symbol, tripped_at)
        self._refresh(day)
        return done

    def clear_trip(self, symbol: str | None, tripped_at: float) -> None:
        self.inner.clear_trip(symbol, tripped_at)

    def reset(self, day: str) -> None:
        self.sync()
        self.inner.reset(day)
        with self._lock:
            self._snapshot.pop(day, None)
            self._trades.pop(day, None)
            self._positions = {}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sync()
