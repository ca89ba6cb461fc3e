"""What every settings section shares: the frozen, strict base model and the error type."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict

from signalops.errors import BadInputError


class ConfigError(BadInputError):
    """A setting is missing, malformed or out of range; the message names it and its source."""


class Section(BaseModel):
    """A settings section: immutable, and an unknown key is an error (never ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one (as SQLite returns them) is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
