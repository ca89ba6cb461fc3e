"""How the canary makes a transition crash-safe: the rollouts row first, then the registry.

Every transition writes its intent to the signal's ``rollouts`` row first (``_write``: the
new status - ``promoting`` / ``rolling_back`` - or the new step and weight, with an entry in
the row's ``history``) and then applies it to the registry with idempotent calls
(``_publish_weight``: the canary-weight tag the sidecar routes by; ``_apply_promotion``,
``_apply_rollback``: the aliases). A run killed in between leaves a row whose registry
side the next tick re-applies. Promotion sets ``previous-champion`` before it moves
``champion``; an alias points at one version, so there is always exactly one champion.
Rolling back a promoted challenger (its watch breached) moves ``champion`` back the same
way: ``previous-champion`` to the failed version first, then ``champion`` to the row's.
Alerts go through the alert ledger (``_alert``), so a retried tick does not repeat one.

``RolloutTransitions`` holds these primitives for one signal; ``signalops.rollout.canary.
Canary`` is the state machine written in them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from signalops.config import Settings
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.warehouse import Warehouse, rollouts

ROLLOUT_ALERT_WINDOW = timedelta(hours=1)  # a retried tick does not repeat its alert


class RolloutTransitions:
    """One signal's rollouts row, registry side and alerts: what a transition is made of."""

    def __init__(self, settings: Settings, signal: str | None = None):
        self.settings = settings
        self.cfg = settings.rollout
        self.signal = signal or settings.signal_name
        self.registry = Registry(settings, self.signal)
        self.warehouse = Warehouse(settings.warehouse_url)
        self.warehouse.create_all()

    def close(self) -> None:
        self.warehouse.dispose()

    # -- rows -------------------------------------------------------------------------------

    def active(self) -> dict[str, Any] | None:
        with self.warehouse.connect() as conn:
            return rollouts.active(conn, self.signal)

    def rows(self) -> list[dict[str, Any]]:
        with self.warehouse.connect() as conn:
            return rollouts.for_signal(conn, self.signal)

    def _new_row(
        self, champion: str | None, challenger: str, status: str, reason: str, now: datetime
    ) -> dict[str, Any]:
        return {
            "id": str(uuid.uuid4()),
            "signal_name": self.signal,
            "champion_version": champion,
            "challenger_version": challenger,
            "step": 0,
            "weight": self.cfg.steps[0] if status == "active" else 0.0,
            "status": status,
            "reason": reason,
            "started_at": now,
            "step_started_at": now,
            "history": [],
        }

    def _write(
        self,
        row: dict[str, Any],
        event: str,
        numbers: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        report: dict[str, Any] | None = None,
    ) -> None:
        now = datetime.now(UTC)
        row["updated_at"] = now
        row["history"] = [
            *row.get("history", []),
            {
                "at": now.isoformat(),
                "event": event,
                "status": row["status"],
                "step": row["step"],
                "weight": row["weight"],
                "reason": row["reason"],
                **({"numbers": numbers} if numbers else {}),
                **({"inputs": inputs} if inputs else {}),
                **({"report": report} if report else {}),
            },
        ]
        with self.warehouse.begin() as conn:
            rollouts.write(conn, row)

    def _alert(
        self,
        title: str,
        text: str,
        severity: str = "info",
        *,
        key: str | None = None,
        window: timedelta = ROLLOUT_ALERT_WINDOW,
    ) -> None:
        """Through the alert ledger: a tick retried after a crash does not repeat it."""
        from signalops.alerts import Alert
        from signalops.alerts.ledger import notify

        alert = Alert(
            title=title,
            text=text,
            severity=severity,  # type: ignore[arg-type]
            link=self.settings.signal_page_url(self.signal),
        )
        notify(alert, self.settings, kind="rollout", key=key or title, window=window)

    # -- registry side (idempotent) -------------------------------------------------------

    def _publish_weight(self, weight: float) -> None:
        if self.registry.model_tags().get(c.CANARY_WEIGHT_TAG) != f"{weight:g}":
            self.registry.set_model_tag(c.CANARY_WEIGHT_TAG, f"{weight:g}")

    def _apply_promotion(self, row: dict[str, Any]) -> None:
        aliases = self.registry.aliases()
        new, old = row["challenger_version"], row["champion_version"]
        if aliases.get(c.ALIAS_CHAMPION) != new:
            if old is not None and aliases.get(c.ALIAS_CHAMPION) == old:
                self.registry.set_alias(c.ALIAS_PREVIOUS_CHAMPION, old)
            self.registry.set_alias(c.ALIAS_CHAMPION, new)
        if self.registry.aliases().get(c.ALIAS_CHALLENGER) == new:
            self.registry.delete_alias(c.ALIAS_CHALLENGER)
        self._publish_weight(0.0)

    def _apply_rollback(self, row: dict[str, Any]) -> None:
        """Weight 0, no challenger alias; a challenger already promoted (the watch) gives
        ``champion`` back to the row's champion and becomes ``previous-champion``."""
        aliases = self.registry.aliases()
        new, old = row["challenger_version"], row["champion_version"]
        if aliases.get(c.ALIAS_CHAMPION) == new and old is not None:
            self.registry.set_alias(c.ALIAS_PREVIOUS_CHAMPION, new)
            self.registry.set_alias(c.ALIAS_CHAMPION, old)
        if aliases.get(c.ALIAS_CHALLENGER) == new:
            self.registry.delete_alias(c.ALIAS_CHALLENGER)
        self._publish_weight(0.0)
