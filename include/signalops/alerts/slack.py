"""Send alerts to Slack through slack-sdk; without Slack settings, log them.

Configure one of (environment or YAML, never the repo):
``SIGNALOPS_ALERTS__SLACK_TOKEN`` (+ ``SIGNALOPS_ALERTS__SLACK_CHANNEL``) for a bot, or
``SIGNALOPS_ALERTS__SLACK_WEBHOOK_URL`` for an incoming webhook.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from signalops.config import AlertSettings

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "error"]
_ICON = {"info": ":information_source:", "warning": ":warning:", "error": ":rotating_light:"}


class AlertError(RuntimeError):
    """Slack refused or could not be reached."""


@dataclass(frozen=True)
class Alert:
    title: str
    text: str
    severity: Severity = "info"
    fields: dict[str, str] = field(default_factory=dict)
    link: str | None = None

    def plain(self) -> str:
        parts = [f"[{self.severity.upper()}] {self.title}", self.text]
        parts += [f"{k}: {v}" for k, v in self.fields.items()]
        if self.link:
            parts.append(self.link)
        return "\n".join(p for p in parts if p)

    def blocks(self) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": self.title[:150]}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"{_ICON[self.severity]} {self.text}"[:3000]},
            },
        ]
        if self.fields:
            blocks.append(
                {
                    "type": "section",
                    "fields": [
                        {"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]}
                        for k, v in list(self.fields.items())[:10]
                    ],
                }
            )
        if self.link:
            blocks.append(
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": f"<{self.link}|details>"}],
                }
            )
        return blocks


def _retry_handlers() -> list[Any]:
    """Slack's own retry handlers: a rate limit (HTTP 429) is waited out as its Retry-After
    says, up to three times; a dropped connection is retried twice."""
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
    )

    return [
        ConnectionErrorRetryHandler(max_retry_count=2),
        RateLimitErrorRetryHandler(max_retry_count=3),
    ]


def channel_of(settings: AlertSettings) -> str:
    """The channel ``send_alert`` uses with these settings."""
    if settings.slack_token:
        return "slack-bot"
    return "slack-webhook" if settings.slack_webhook_url else "log"


def send_alert(alert: Alert, settings: AlertSettings) -> str:
    """Deliver ``alert``; return the channel used: ``slack-bot``, ``slack-webhook`` or ``log``."""
    if settings.slack_token:
        from slack_sdk import WebClient
        from slack_sdk.errors import SlackApiError

        client = WebClient(
            token=settings.slack_token,
            timeout=10,
            base_url=settings.slack_base_url or WebClient.BASE_URL,
            retry_handlers=_retry_handlers(),
        )
        try:
            client.chat_postMessage(
                channel=settings.slack_channel, text=alert.plain(), blocks=alert.blocks()
            )
        except (SlackApiError, OSError) as exc:
            raise AlertError(
                f"Slack chat.postMessage to {settings.slack_channel} failed: {exc}"
            ) from exc
        return "slack-bot"
    if settings.slack_webhook_url:
        from slack_sdk.webhook import WebhookClient

        webhook = WebhookClient(
            settings.slack_webhook_url, timeout=10, retry_handlers=_retry_handlers()
        )
        response = webhook.send(text=alert.plain(), blocks=alert.blocks())
        if response.status_code != 200:
            raise AlertError(f"Slack webhook answered {response.status_code}: {response.body}")
        return "slack-webhook"
    level = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}[
        alert.severity
    ]
    log.log(level, "ALERT %s", alert.plain().replace("\n", " | "))
    return "log"
