"""Alerts with a memory: dedup across processes and runs, and a record of every alert.

``deliver`` keeps one row per dedup key in the warehouse table ``alerts``. An alert whose key
was delivered within its window, or is being delivered by another process right now, is
*suppressed* (counted, not sent); otherwise this caller claims it and sends it. The claim is
a compare-and-swap on the row's occurrence count, so two workers (or two DAG runs) that
raise the same alert at once send it once. A failed send is recorded as ``failed`` and
raised: the next occurrence sends again; nothing is marked sent that was not. When the
warehouse itself cannot be reached the alert is sent without its record: an alert is never
lost for want of its bookkeeping.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal

import sqlalchemy as sa

from signalops.alerts.slack import Alert, AlertError, channel_of, send_alert
from signalops.config import ConfigError, Settings, as_utc

if TYPE_CHECKING:
    from signalops.warehouse import Warehouse

log = logging.getLogger(__name__)

Outcome = Literal["sent", "suppressed", "rate_limited"]
RATE_WINDOW = timedelta(minutes=1)
IN_FLIGHT = timedelta(seconds=60)  # a claim older than this is taken to have died
CLAIM_ATTEMPTS = 8


def deliver(alert: Alert, settings: Settings, *, kind: str, key: str, window: timedelta) -> Outcome:
    """Send ``alert`` unless ``key`` was delivered within ``window`` (or is in flight);
    record the outcome either way. Raises AlertError when the send fails. An alert without
    a link links to its signal's section of the Signals page."""
    from signalops.warehouse import Warehouse

    key = f"{kind}:{key}"[:256]
    if alert.link is None:
        alert = replace(alert, link=settings.signal_page_url())
    try:
        with Warehouse(settings.warehouse_url) as warehouse:
            warehouse.create_all()
            claimed = _claim(warehouse, alert, kind, key, window)
            if not claimed:
                log.info("alert %s suppressed (sent within %s)", key, window)
                return "suppressed"
            channel = channel_of(settings.alerts)
            if _over_rate_limit(warehouse, channel, settings.alerts.max_per_minute):
                log.warning("alert %s not sent: over the rate limit of %s", key, channel)
                _finish(
                    warehouse,
                    key,
                    status="rate_limited",
                    error=f"over {settings.alerts.max_per_minute} alerts/min on {channel}",
                )
                return "rate_limited"
            try:
                channel = send_alert(alert, settings.alerts)
            except AlertError as exc:
                _finish(warehouse, key, status="failed", error=str(exc)[:2000])
                raise
            _finish(warehouse, key, status="sent", channel=channel, sent=True)
            return "sent"
    except sa.exc.OperationalError as exc:
        log.warning("alert ledger unreachable (%s): sending %s without its record", exc, key)
        send_alert(alert, settings.alerts)
        return "sent"


def notify(
    alert: Alert, settings: Settings | None, *, kind: str, key: str, window: timedelta
) -> Outcome | None:
    """``deliver`` for callers whose own work must go on: a broken alert channel (or broken
    settings) is logged, never raised; ``None`` says the alert could not be sent (the ledger
    recorded it as failed, so its next occurrence is sent)."""
    try:
        if settings is None:
            from signalops.config import load_settings

            settings = load_settings()
        return deliver(alert, settings, kind=kind, key=key, window=window)
    except (AlertError, ConfigError) as exc:
        log.error("alert %s:%s not sent: %s", kind, key, exc)
        return None
    except Exception:  # the alert is a side effect: the caller's work must go on
        log.exception("alert %s:%s not sent", kind, key)
        return None


def resolve(settings: Settings, *, kind: str, key: str) -> None:
    """The condition behind ``kind:key`` is over (a breaker reset, say): its next occurrence
    is sent whatever its window."""
    from signalops.warehouse import Warehouse
    from signalops.warehouse import alerts as alert_rows

    try:
        with Warehouse(settings.warehouse_url) as warehouse:
            warehouse.create_all()
            with warehouse.begin() as conn:
                alert_rows.update(conn, f"{kind}:{key}"[:256], last_sent=None, status="resolved")
    except sa.exc.OperationalError as exc:
        log.warning("alert ledger unreachable (%s): %s:%s not marked resolved", exc, kind, key)


def _over_rate_limit(warehouse: Warehouse, channel: str, limit: int) -> bool:
    """At most ``limit`` alerts a minute on a Slack channel (the log has none)."""
    from signalops.warehouse import alerts as alert_rows

    if channel == "log":
        return False
    since = datetime.now(UTC) - RATE_WINDOW
    with warehouse.connect() as conn:
        recent = alert_rows.sent_since(conn, channel, since)
    return recent >= limit


def _claim(warehouse: Warehouse, alert: Alert, kind: str, key: str, window: timedelta) -> bool:
    """Count this occurrence; True when this caller is to send it."""
    from signalops.warehouse import alerts as alert_rows

    for _ in range(CLAIM_ATTEMPTS):
        now = datetime.now(UTC)
        with warehouse.connect() as conn:
            row = alert_rows.find(conn, key)
        if row is None:
            try:
                with warehouse.begin() as conn:
                    alert_rows.insert_claimed(
                        conn, key, kind, alert.severity, alert.title[:512], now
                    )
            except sa.exc.IntegrityError:
                continue  # another process inserted it first: decide again
            return True
        sent_recently = row.last_sent is not None and now - as_utc(row.last_sent) < window
        in_flight = row.claimed_at is not None and now - as_utc(row.claimed_at) < IN_FLIGHT
        suppress = sent_recently or in_flight
        with warehouse.begin() as conn:  # compare-and-swap on the occurrence count
            swapped = alert_rows.swap_occurrence(
                conn,
                key,
                row.occurrences,
                last_seen=now,
                status="suppressed" if suppress else "sending",
                claimed_at=row.claimed_at if suppress else now,
                severity=alert.severity,
                title=alert.title[:512],
            )
        if swapped == 1:
            return not suppress
    raise AlertError(f"alert {key}: could not claim it after {CLAIM_ATTEMPTS} attempts")


def _finish(
    warehouse: Warehouse,
    key: str,
    *,
    status: str,
    channel: str | None = None,
    error: str | None = None,
    sent: bool = False,
) -> None:
    from signalops.warehouse import alerts as alert_rows

    values: dict[str, object] = {
        "status": status,
        "channel": channel,
        "error": error,
        "claimed_at": None,
    }
    if sent:
        values["last_sent"] = datetime.now(UTC)
    with warehouse.begin() as conn:
        alert_rows.update(conn, key, **values)
