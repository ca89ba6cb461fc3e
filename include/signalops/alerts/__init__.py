"""Alerts: Slack when configured (bot token or incoming webhook), a log line otherwise."""

from signalops.alerts.slack import Alert, AlertError, send_alert

__all__ = ["Alert", "AlertError", "send_alert"]
