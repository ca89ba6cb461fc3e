from __future__ import annotations

import logging

import pytest

from signalops.alerts import Alert, AlertError, send_alert
from signalops.config import AlertSettings
from tests.slack_recorder import slack_recorder

ALERT = Alert(
    "market_data.extract failed",
    "BarValidationError: line 3",
    "error",
    {"run": "r1"},
    "http://x/log",
)


def test_bot_token_posts_to_chat_post_message() -> None:
    with slack_recorder() as slack:
        cfg = AlertSettings(
            slack_token="xoxb-test", slack_channel="#alerts", slack_base_url=slack.url + "/api/"
        )
        assert send_alert(ALERT, cfg) == "slack-bot"
    [req] = slack.requests
    assert req.path == "/api/chat.postMessage"
    assert req.headers["Authorization"] == "Bearer xoxb-test"
    assert req.body["channel"] == "#alerts"
    assert "[ERROR] market_data.extract failed" in req.body["text"]
    assert req.body["blocks"][0]["text"]["text"] == "market_data.extract failed"


def test_webhook() -> None:
    with slack_recorder() as slack:
        assert (
            send_alert(ALERT, AlertSettings(slack_webhook_url=slack.url + "/hook"))
            == "slack-webhook"
        )
    [req] = slack.requests
    assert req.path == "/hook" and "line 3" in req.body["text"]


def test_slack_errors_are_typed() -> None:
    with slack_recorder() as slack:
        slack.status = 500
        with pytest.raises(AlertError, match="500"):
            send_alert(ALERT, AlertSettings(slack_webhook_url=slack.url + "/hook"))
        with pytest.raises(AlertError, match="#alerts"):
            send_alert(
                ALERT,
                AlertSettings(
                    slack_token="x", slack_channel="#alerts", slack_base_url=slack.url + "/api/"
                ),
            )


def test_a_rate_limit_is_waited_out_and_the_alert_delivered() -> None:
    """Slack answers 429 with Retry-After: the client waits and sends again (bot and webhook);
    past the retries it is an AlertError, never a silent loss."""
    with slack_recorder() as slack:
        slack.script = [429, 429]
        bot = AlertSettings(
            slack_token="x", slack_channel="#alerts", slack_base_url=slack.url + "/api/"
        )
        assert send_alert(ALERT, bot) == "slack-bot"
        assert len(slack.requests) == 3
        slack.script = [429]
        assert send_alert(ALERT, AlertSettings(slack_webhook_url=slack.url + "/hook")) == (
            "slack-webhook"
        )
        assert len(slack.requests) == 5
        slack.script = [429] * 4
        with pytest.raises(AlertError, match="429"):
            send_alert(ALERT, AlertSettings(slack_webhook_url=slack.url + "/hook"))


def test_without_slack_it_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="signalops.alerts.slack"):
        assert send_alert(ALERT, AlertSettings()) == "log"
    assert "ALERT [ERROR] market_data.extract failed" in caplog.text
