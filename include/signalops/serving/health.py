"""The sidecar's view of the services it depends on: up, down, since when, and why.

A request that needs a dependency which is down must not wait on it, log a traceback, or
leak where it lives: it gets a 503 with ``Retry-After`` whose reason names the dependency
only. The state change itself (down, back up) is logged once, with the driver's message for
the operator. While a dependency is down, at most one request per ``retry_s`` tries it again
(the others fail fast), so an outage costs neither latency nor log volume.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_outage(exc: BaseException) -> bool:
    """True for errors that say a service cannot be reached (not that a request was bad)."""
    try:
        import redis.exceptions as redis_errors

        if isinstance(exc, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
            return True
        if isinstance(exc, redis_errors.ResponseError) and "LOADING" in str(exc):
            return True
    except ImportError:  # redis is a dependency, but the rule must not need it
        pass
    import sqlalchemy.exc as sa_errors

    if isinstance(
        exc, (sa_errors.OperationalError, sa_errors.InterfaceError, sa_errors.TimeoutError)
    ):
        return True
    if isinstance(exc, sa_errors.DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import psycopg2

        if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return True
    except ImportError:
        pass
    return isinstance(exc, (ConnectionError, TimeoutError))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class DependencyDown(Exception):
    """Raised to the HTTP layer: answered 503 + Retry-After, naming ``dependency`` only."""

    def __init__(self, dependency: Dependency):
        super().__init__(f"{dependency.label} is unreachable")
        self.dependency = dependency


@dataclass
class Dependency:
    name: str  # machine name: online_store, risk_state, registry, prediction_log
    label: str  # what a caller is told: "the online feature store (Redis)"
    retry_s: float = 1.0
    state: str = "unknown"  # unknown | up | down
    since: float = field(default_factory=time.time)
    error: str | None = None  # the driver's first line: logged, never answered
    error_kind: str | None = None  # the exception's class: what /ready shows
    failures: int = 0
    _next_try: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def ok(self) -> None:
        if self.state == "up":
            return
        with self._lock:
            if self.state == "down":
                log.warning("%s is back after %.1f s down", self.name, time.time() - self.since)
            if self.state != "up":
                self.state, self.since, self.error = "up", time.time(), None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
            self._next_try = time.monotonic() + self.retry_s
            if self.state != "down":
                self.state, self.since, self.error = "down", time.time(), first_line(exc)
                self.error_kind = type(exc).__name__
                log.error(
                    "%s is down: %s (requests that need it get 503 until it is back)",
                    self.name,
                    self.error,
                )

    def may_try(self) -> bool:
        """While down: one caller per ``retry_s`` gets to try again; the rest fail fast."""
        if self.state != "down":
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._next_try:
                return False
            self._next_try = now + self.retry_s
            return True

    def call(self, action: Callable[[], T], mark_up: bool = True) -> T:
        """``action()``, or DependencyDown: at once while the dependency is down (one caller
        per ``retry_s`` tries it), or when it fails with an outage (told once). A success
        marks it up unless ``mark_up`` is False (an action served from a local copy proves
        nothing about the service). Other errors pass through."""
        if not self.may_try():
            raise DependencyDown(self)
        try:
            result = action()
        except Exception as exc:
            if not is_outage(exc):
                raise
            self.failed(exc)
            raise DependencyDown(self) from None
        if mark_up:
            self.ok()
        return result

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state, "since": self.since}
        if self.state == "down":
            out["error"] = self.error_kind
            out["failures"] = self.failures
        return out
