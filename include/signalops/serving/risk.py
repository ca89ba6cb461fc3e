"""The risk guard: a signal that breaks a rule becomes HOLD, with the rule as its reason;
one that passes carries a suggested position size.

Rules (``serving.risk``): minimum confidence; trading hours and days in a timezone; a
maximum number of trades (BUY/SELL signals let through) per day; circuit breakers, for the
account and for each symbol, on the day's loss, the drawdown from the equity peak and
consecutive losing trades, fed by ``POST /v1/risk/trade-result`` and closed again by an
admin reset or, with ``breaker_cooldown_s``, on their own; exposure limits per symbol and
in total. Sizing: the edge (``2 * confidence - 1``) times the volatility target over the
row's volatility (when both are known), capped by ``max_position_size``; a position counts
against the exposure limits until the symbol's trade result closes it, the next signal on
the symbol replaces it, or ``position_ttl_s`` passes.

State (``risk_state``) lives in Redis when ``online_store.redis_url`` is set (shared by
every worker process), else in this process.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from signalops.config import RiskSettings
from signalops.serving.risk_state import RiskState, scoped, symbols_in

NO_SYMBOL = "-"  # the scope of a row that names no symbol (/invocations, V2)


@dataclass(frozen=True)
class RiskDecision:
    allowed: bool
    reason: str  # "ok" or the rule that blocked it
    size: float = 0.0  # suggested position, fraction of equity (signed: SELL < 0)

    def as_text(self) -> str:
        return "allowed" if self.allowed else f"blocked: {self.reason}"


@dataclass(frozen=True)
class Trip:
    """A breaker that is open: whose, why, since when (0: not noted yet)."""

    symbol: str | None
    reason: str
    tripped_at: float


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

    # -- the request path ---------------------------------------------------------------

    def check(
        self,
        signals: list[str],
        confidences: list[float],
        now: datetime,
        symbols: list[str | None] | None = None,
        volatilities: list[float] | None = None,
    ) -> list[RiskDecision]:
        """Decide for each BUY/SELL signal (HOLD passes through as allowed, size 0) and
        size the ones let through."""
        cfg = self.settings
        day, market_rule = self._calendar(now)
        state = self.state.get(day)
        account_breaker = self.breaker(state)
        stamp = now.timestamp()
        # Only the total cap needs the other symbols' positions (a walk over the state).
        positions = self._open_positions(state, stamp) if cfg.max_total_exposure is not None else {}
        decisions = []
        trades = int(state["trades"])
        new_trades: dict[str, int] = {}
        new_positions: dict[str, tuple[float, float]] = {}
        for i, (signal, confidence) in enumerate(zip(signals, confidences, strict=True)):
            symbol = (symbols[i] if symbols else None) or NO_SYMBOL
            if signal == "HOLD":
                decisions.append(RiskDecision(True, "ok"))
                continue
            blocked = (
                f"confidence {confidence:.3f} < {cfg.min_confidence}"
                if confidence < cfg.min_confidence
                else market_rule or account_breaker or self.breaker(state, symbol)
            )
            if not blocked and trades + sum(new_trades.values()) >= cfg.max_trades_per_day:
                blocked = f"max trades per day ({cfg.max_trades_per_day}) reached"
            size = 0.0
            if not blocked:
                vol = volatilities[i] if volatilities else None
                size, blocked = self._size(confidence, vol, symbol, positions)
            if blocked:
                decisions.append(RiskDecision(False, blocked))
                continue
            signed = size if signal == "BUY" else -size
            positions[symbol] = signed
            new_positions[symbol] = (signed, stamp)
            new_trades[symbol] = new_trades.get(symbol, 0) + 1
            decisions.append(RiskDecision(True, "ok", signed))
        if new_trades:
            self.state.commit(day, {"": sum(new_trades.values()), **new_trades}, new_positions)
        return decisions

    def _size(
        self, confidence: float, vol: float | None, symbol: str, positions: dict[str, float]
    ) -> tuple[float, str | None]:
        """(suggested size, None) or (0, the exposure rule that leaves no room)."""
        cfg = self.settings
        size = max(0.0, 2 * confidence - 1)
        if cfg.volatility_target is not None and vol is not None and vol > 0:
            size *= cfg.volatility_target / vol
        size = min(size, cfg.max_position_size)
        if cfg.max_symbol_exposure is not None:
            size = min(size, cfg.max_symbol_exposure)
        if cfg.max_total_exposure is not None:
            others = sum(abs(v) for s, v in positions.items() if s != symbol)
            room = cfg.max_total_exposure - others
            if room <= 0 or room < cfg.min_position_size:
                return 0.0, (
                    f"total exposure {others:.4f} leaves no room under "
                    f"{cfg.max_total_exposure} (min position {cfg.min_position_size})"
                )
            size = min(size, room)
        if size < cfg.min_position_size:
            return 0.0, f"position size {size:.4f} < {cfg.min_position_size}"
        return round(size, 6), None

    def _open_positions(self, state: dict[str, float], now: float) -> dict[str, float]:
        """symbol -> signed size of the positions that still count against exposure."""
        ttl = self.settings.position_ttl_s
        out = {}
        for symbol in symbols_in(state):
            size = state.get(scoped("pos", symbol), 0.0)
            if size and (ttl is None or now - state.get(scoped("pos_ts", symbol), 0.0) < ttl):
                out[symbol] = size
        return out

    # -- breakers -----------------------------------------------------------------------

    def breaker(self, state: dict[str, float], symbol: str | None = None) -> str | None:
        """Why the account's (or ``symbol``'s) circuit breaker is open (None: closed)."""
        cfg = self.settings
        whose = f" ({symbol})" if symbol else ""
        loss = state.get(scoped("pnl", symbol), 0.0) - state.get(scoped("pnl_base", symbol), 0.0)
        if loss <= -cfg.max_daily_loss:
            return f"circuit breaker{whose}: daily loss {loss:.4f} <= -{cfg.max_daily_loss}"
        drawdown = state.get(scoped("peak", symbol), 0.0) - state.get(scoped("equity", symbol), 0.0)
        if drawdown >= cfg.max_drawdown:
            return f"circuit breaker{whose}: drawdown {drawdown:.4f} >= {cfg.max_drawdown}"
        losses = state.get(scoped("consecutive_losses", symbol), 0.0)
        if losses >= cfg.max_consecutive_losses:
            return f"circuit breaker{whose}: {int(losses)} consecutive losses"
        return None

    def trips(self, state: dict[str, float]) -> list[Trip]:
        """Every open breaker, the account's first."""
        out = []
        for symbol in [None, *symbols_in(state)]:
            reason = self.breaker(state, symbol)
            if reason:
                out.append(Trip(symbol, reason, state.get(scoped("tripped_at", symbol), 0.0)))
        return out

    def trade_result(self, pnl: float, now: datetime, symbol: str | None = None) -> dict[str, Any]:
        return self.state.record_trade(self.day(now), pnl, symbol)

    def reset(self, now: datetime) -> None:
        self.state.reset(self.day(now))

    def due_cooldowns(self, now: datetime) -> list[Trip]:
        """The open breakers whose cooldown has run, closed here (each by one worker only:
        the ones this call closed are returned); trips of breakers that closed on their own
        (a new trading day) forgotten, so that the next trip alerts again."""
        cooldown = self.settings.breaker_cooldown_s
        day = self.day(now)
        closed = []
        state = self.state.get(day)
        for symbol in [None, *symbols_in(state)]:  # closed without a cooldown: a new day
            tripped = state.get(scoped("tripped_at", symbol), 0.0)
            if tripped and self.breaker(state, symbol) is None:
                self.state.clear_trip(symbol, tripped)
        if cooldown is None:
            return []
        for trip in self.trips(state):
            due = trip.tripped_at and now.timestamp() - trip.tripped_at >= cooldown
            if due and self.state.cool_down(day, trip.symbol, trip.tripped_at):
                closed.append(trip)
        return closed

    # -- the summary --------------------------------------------------------------------

    def summary(self, now: datetime) -> dict[str, Any]:
        """Trades, realized P&L, drawdown, losing streak, exposure and breaker per symbol
        and for the account (``GET /v1/risk/summary``)."""
        cfg = self.settings
        day, market_rule = self._calendar(now)
        state = self.state.get(day)
        positions = self._open_positions(state, now.timestamp())

        def scope(symbol: str | None) -> dict[str, Any]:
            def f(name: str) -> float:
                return state.get(scoped(name, symbol), 0.0)

            tripped = f("tripped_at")
            reason = self.breaker(state, symbol)
            resets = (
                tripped + cfg.breaker_cooldown_s
                if reason and tripped and cfg.breaker_cooldown_s is not None
                else None
            )
            out: dict[str, Any] = {
                "trades_today": int(f("trades")),
                "realized_pnl_today": f("pnl"),
                "equity": f("equity"),
                "drawdown": f("peak") - f("equity"),
                "consecutive_losses": int(f("consecutive_losses")),
                "breaker": {
                    "open": reason is not None,
                    "reason": reason,
                    "tripped_at": _iso(tripped) if reason and tripped else None,
                    "cooldown_s": cfg.breaker_cooldown_s,
                    "resets_at": _iso(resets) if resets else None,
                },
            }
            if symbol is None:
                out["exposure"] = round(sum(abs(v) for v in positions.values()), 6)
            else:
                out["position"] = positions.get(symbol, 0.0)
            return out

        return {
            "day": day,
            "timezone": cfg.timezone,
            "market": {"open": market_rule is None, "reason": market_rule},
            "total": scope(None),
            "symbols": {s: scope(s) for s in symbols_in(state)},
            "limits": cfg.model_dump(mode="json"),
        }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
