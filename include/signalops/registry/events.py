"""Registry change notifications on Redis pub/sub: the sidecar swaps in about a second.

The registry is the source of truth and the sidecar polls it; polling every few seconds
leaves the served version behind the registry for seconds after every alias move. So the
writers of what the sidecar serves (aliases, the canary-weight tag) also publish a small
JSON message on ``<online_store.key_prefix>:registry-events`` after the write succeeded,
and the sidecar refreshes the named signal when one arrives. A message only says "look
again": it carries no state the subscriber trusts, so a lost, late or repeated message
costs nothing but the poll interval, and polling stays the fallback.

Payload: ``{"signal": <registered model>, "change": "alias_set" | "alias_deleted" |
"canary_weight", "alias": ..., "version": ..., "value": ..., "at": <unix time>}`` (the
keys that apply to the change).

Best effort on both sides: a failed publish never fails the write (one warning per
outage), and the subscriber reconnects with backoff, logging the state change once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CHANNEL_SUFFIX = "registry-events"
ALIAS_SET = "alias_set"
ALIAS_DELETED = "alias_deleted"
CANARY_WEIGHT = "canary_weight"


def channel(key_prefix: str) -> str:
    """The pub/sub channel of one deployment (channels ignore the Redis database number,
    so the key prefix is what keeps deployments sharing a Redis apart)."""
    return f"{key_prefix}:{CHANNEL_SUFFIX}"


class EventPublisher:
    """Publishes registry events; never raises (the registry write already succeeded)."""

    def __init__(self, redis_url: str, key_prefix: str):
        self.redis_url = redis_url
        self.channel = channel(key_prefix)
        self._client: Any = None
        self._failing = False

    def publish(self, signal: str, change: str, **details: str | None) -> bool:
        """Publish one event; False (and a warning, once per outage) when Redis fails."""
        payload = json.dumps({"signal": signal, "change": change, **details, "at": time.time()})
        try:
            if self._client is None:
                import redis
                from redis.backoff import NoBackoff
                from redis.retry import Retry

                # Short timeouts and one retry (a stale pooled connection after a Redis
                # restart): a registry write must not wait on a notification.
                self._client = redis.Redis.from_url(
                    self.redis_url,
                    socket_connect_timeout=0.5,
                    socket_timeout=0.5,
                    retry=Retry(NoBackoff(), 1),
                )
            self._client.publish(self.channel, payload)
        except Exception as exc:  # any failure: the notification is best effort
            if not self._failing:
                log.warning(
                    "registry events: cannot publish on %s (%s); sidecars follow the registry "
                    "by polling until Redis is back",
                    self.channel,
                    exc,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("registry events: publishing on %s again", self.channel)
            self._failing = False
        return True


@functools.cache
def publisher(redis_url: str, key_prefix: str) -> EventPublisher:
    """One publisher per Redis and prefix in a process: one connection, one warning per
    outage however many Registry objects write (the canary builds one per run)."""
    return EventPublisher(redis_url, key_prefix)


class EventListener:
    """Subscribes to the registry events on a daemon thread until ``stop`` is set.

    ``on_events`` gets the decoded payloads of each burst (a promotion publishes three or
    four: they are handled together). ``on_connect`` runs after every (re)subscription:
    messages published while the subscription was down are lost, so the caller catches up
    by reading the registry. Lost connections are retried with exponential backoff; the
    state change is logged once, not per attempt.
    """

    def __init__(
        self,
        redis_url: str,
        key_prefix: str,
        on_events: Callable[[list[dict[str, Any]]], None],
        on_connect: Callable[[], object],
        stop: threading.Event,
        min_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
    ):
        self.redis_url = redis_url
        self.channel = channel(key_prefix)
        self._on_events = on_events
        self._on_connect = on_connect
        self._stop = stop
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._thread: threading.Thread | None = None
        self.connected = False
        self._ever_connected = False
        self._down_logged = False

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name="registry-events-listener", daemon=True
        )
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        backoff = self._min_backoff_s
        while not self._stop.is_set():
            pubsub = None
            try:
                client = redis.Redis.from_url(
                    self.redis_url,
                    socket_connect_timeout=2,
                    socket_timeout=5,
                    health_check_interval=5,  # a silent dead connection is found by a PING
                    retry=Retry(NoBackoff(), 0),  # this loop retries, and catches up
                )
                pubsub = client.pubsub()
                pubsub.subscribe(self.channel)
                self._wait_subscribed(pubsub)
                self._up()
                backoff = self._min_backoff_s
                self._call(self._on_connect)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    burst = [message]
                    while (more := pubsub.get_message(timeout=0)) is not None:
                        burst.append(more)
                    events = [e for e in map(_decode, burst) if e is not None]
                    if events:
                        self._call(self._on_events, events)
            except (redis.RedisError, OSError) as exc:
                self._down(exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.RedisError, OSError):
                        pubsub.close()
        self.connected = False

    def _wait_subscribed(self, pubsub: Any) -> None:
        """Block until Redis confirms the subscription: only then is no later message lost,
        and only then may ``on_connect`` read the registry to catch up."""
        import redis

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None and message.get("type") == "subscribe":
                return
        raise redis.ConnectionError(f"no confirmation of the subscription to {self.channel}")

    def _up(self) -> None:
        self.connected = True
        if not self._ever_connected:
            log.info("registry events: subscribed to %s", self.channel)
        elif self._down_logged:
            log.info("registry events: subscribed to %s again", self.channel)
        self._ever_connected = True
        self._down_logged = False

    def _down(self, exc: Exception) -> None:
        self.connected = False
        if not self._down_logged:
            log.warning(
                "registry events: no subscription to %s (%s); following the registry by "
                "polling only, retrying with backoff up to %g s",
                self.channel,
                exc,
                self._max_backoff_s,
            )
            self._down_logged = True

    def _call(self, handler: Callable[..., object], *args: Any) -> None:
        """A failing handler (registry unreachable) must not end the subscription."""
        try:
            handler(*args)
        except Exception as exc:
            log.warning("registry events: handling failed: %s", exc)


def _decode(message: dict[str, Any]) -> dict[str, Any] | None:
    if message.get("type") != "message":
        return None
    try:
        event = json.loads(message["data"])
    except (ValueError, TypeError):
        log.warning("registry events: ignoring a message that is not JSON: %r", message["data"])
        return None
    return event if isinstance(event, dict) and isinstance(event.get("signal"), str) else None
