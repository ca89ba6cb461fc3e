"""Alerts: Slack when configured (bot token or incoming webhook), a log line otherwise;
``signalops.alerts.ledger.deliver`` adds dedup across processes and the ``alerts`` record."""

from signalops.alerts.slack import Alert, AlertError, send_alert

__all__ = ["Alert", "AlertError", "send_alert"]
