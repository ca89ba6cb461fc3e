"""The canary state machine: shadow -> 1% -> 10% -> 50% -> 100% -> champion, or roll back.

One ``tick`` per run of the ``canary`` DAG, per signal:

1. **Repair** a transition a crash left half-done (below).
2. **Start / supersede**: a ``challenger`` alias with no active rollout starts one (shadow
   step); a rollout for an older challenger is marked ``superseded`` (recorded, alerted)
   and a new one starts; a rollout whose challenger alias vanished is closed.
3. **Judge** the current step on live data since the step started (``rollout.*``;
   the figures: ``signalops.rollout.step_metrics``; the guards:
   ``signalops.rollout.guards``): latency p95 and score distribution (PSI) against the
   champion; in the shadow step also the share of requests where both give the same
   BUY/SELL/HOLD; once ``min_outcomes`` matured outcomes exist for both, live accuracy and
   log loss must not be significantly worse (one-sided tests at ``significance``). A breach
   rolls back at once.
   The error rate (failed scorings, ``scoring_errors``) must not exceed the champion's by
   more than ``max_error_rate_excess`` (one-sided test) once the challenger has
   ``min_predictions`` scorings at the step.
4. **Advance** when the step has lasted ``min_step_minutes`` with ``min_predictions``
   challenger rows and every guard holds; after the last step (w = 1) **promote**.
5. **Watch** the new champion for ``watch_hours`` after the promotion (status
   ``watching``; 0 = off, the row ends ``promoted``): the same guards (but score PSI)
   judge its live figures since the promotion against the previous champion's record (its last
   ``watch_baseline_hours`` as champion, ``step_metrics.watch_metrics``). A breach rolls
   back (``champion`` back to the previous champion, the failed one becomes
   ``previous-champion``); a watch that holds ends ``done``. A new challenger waits for the
   watch to end.

When a rollout is promoted or rolled back, its A/B report (``signalops.rollout.report``)
is logged on the challenger's run and linked from the row's history (event ``ab report``).

Crash safety (``signalops.rollout.transitions``): every transition writes its intent to
the ``rollouts`` row first (``promoting`` / ``rolling_back``, or the new step and weight)
and then applies it to the registry with idempotent calls (aliases, the canary-weight
tag). A run killed in between leaves a row whose registry side the next tick re-applies,
then completes. Promotion sets ``previous-champion`` before it moves ``champion``; an alias
points at one version, so there is always exactly one champion.

A challenger whose inputs differ from the champion's (feature set, feature names or their
order, from each version's ``feature_spec.json``; ``signalops.rollout.inputs``) is called
out when its rollout starts and when it is promoted, as is a manual rollback to a version
with other inputs: callers that send features inline must send the other ones. The row's
history entry carries the difference (``inputs``) and the Slack alert says it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from signalops.config import Settings
from signalops.registry import contracts as c
from signalops.rollout.guards import Verdict, judge
from signalops.rollout.inputs import describe_input_change, input_difference
from signalops.rollout.report import build, log_report
from signalops.rollout.step_metrics import rollout_metrics, step_metrics, watch_metrics
from signalops.rollout.transitions import RolloutTransitions
from signalops.warehouse import rollouts
from signalops.windows import parse_ts

log = logging.getLogger(__name__)

ACTIVE = rollouts.ACTIVE  # the statuses of a rollout in progress


class Canary(RolloutTransitions):
    """One signal's rollout: ``tick`` moves it on, ``rollback`` restores a champion."""

    # -- one run -----------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        row = self.active()
        if row is not None and row["status"] != "active":
            # A new champion under watch, or a crash left a transition half-done: complete it.
            return self._watch(row, now) if row["status"] == "watching" else self._finish(row)
        aliases = self.registry.aliases()
        if row is None and not aliases:  # nothing registered yet (a new deployment): no weight
            return {"action": "idle", "reason": "no registered model yet"}
        challenger = aliases.get(c.ALIAS_CHALLENGER)
        champion = aliases.get(c.ALIAS_CHAMPION)
        if row is not None and row["challenger_version"] != challenger:
            if challenger is None:
                row.update(status="rolled_back", reason="the challenger alias was removed")
                self._write(row, "closed")
                self._publish_weight(0.0)
                return {"action": "closed", "rollout": row["id"]}
            row.update(status="superseded", reason=f"superseded by challenger v{challenger}")
            self._write(row, "superseded")
            self._alert(
                f"signalops: rollout of {self.signal} v{row['challenger_version']} superseded",
                f"A newer challenger v{challenger} was registered; its rollout starts in shadow.",
                "warning",
            )
            row = None
        if row is None:
            if challenger is None or challenger == champion:
                self._publish_weight(0.0)
                return {"action": "idle", "reason": "no challenger"}
            inputs = self._inputs(champion, challenger, "champion", "challenger")
            reason = f"started; {inputs['text']}" if inputs else "started"
            row = self._new_row(champion, challenger, "active", reason, now)
            self._write(row, "started", inputs=inputs)
            self._publish_weight(row["weight"])
            self._alert(
                f"signalops: rollout of {self.signal} v{challenger} started",
                f"Champion v{champion}; step 0: weight {row['weight']:g}"
                + (" (shadow)" if row["weight"] == 0 else "")
                + (f". {inputs['text']}." if inputs else ""),
                "warning" if inputs else "info",
            )
            return {"action": "started", "rollout": row["id"], "weight": row["weight"]}
        self._publish_weight(row["weight"])  # repairs a weight a crash left unpublished
        return self._judge(row, now)

    def _judge(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        champ, chall, agreement = step_metrics(self.settings, self.warehouse, self.signal, row, now)
        step_age = now - parse_ts(row["step_started_at"], "step_started_at")
        verdict = judge(self.cfg, row["weight"] == 0, champ, chall, step_age, agreement)
        if verdict.breach:
            row.update(status="rolling_back", reason=verdict.breach)
            self._write(row, "guard breached", verdict.numbers)
            return self._finish(row)
        if not verdict.ready:
            self._check_stuck(row, now, verdict.waiting)
            return {"action": "wait", "rollout": row["id"], "waiting": verdict.waiting}
        if row["step"] + 1 >= len(self.cfg.steps):
            row.update(status="promoting", reason="every step passed")
            self._write(row, "promote", verdict.numbers)
            return self._finish(row)
        row.update(
            step=row["step"] + 1,
            weight=self.cfg.steps[row["step"] + 1],
            step_started_at=now,
            reason=f"step {row['step']} passed",
        )
        self._write(row, "advanced", verdict.numbers)
        self._publish_weight(row["weight"])
        self._alert(
            f"signalops: rollout of {self.signal} v{row['challenger_version']} advanced",
            f"Weight now {row['weight']:.0%} (step {row['step']}). {self._figures(verdict)}",
            key=f"advanced:{row['id']}:{row['step']}",
        )
        return {"action": "advanced", "rollout": row["id"], "weight": row["weight"]}

    @staticmethod
    def _figures(verdict: Verdict) -> str:
        ch, cc = verdict.numbers.get("champion", {}), verdict.numbers.get("challenger", {})
        return (
            f"challenger {cc.get('predictions')} predictions, p95 {cc.get('latency_p95_ms')} ms, "
            f"accuracy {cc.get('accuracy')} on {cc.get('outcomes')} outcomes; champion "
            f"p95 {ch.get('latency_p95_ms')} ms, accuracy {ch.get('accuracy')}"
        )

    def _finish(self, row: dict[str, Any]) -> dict[str, Any]:
        """Apply a written intent to the registry, then record that it is done."""
        now = datetime.now(UTC)
        if row["status"] == "promoting":
            self._apply_promotion(row)
            # The promotion and the start of the watch are one write: a crash after it
            # leaves a row the next tick watches.
            watch = self.cfg.watch_hours > 0 and row["champion_version"] is not None
            row.update(
                status="watching" if watch else "promoted",
                step=len(self.cfg.steps) - 1,
                weight=1.0,
                **({"step_started_at": now} if watch else {}),
            )
            inputs = self._inputs(
                row["champion_version"], row["challenger_version"], "champion", "challenger"
            )
            self._write(row, "promoted", inputs=inputs)
            self._alert(
                f"signalops: {self.signal} v{row['challenger_version']} promoted to champion",
                f"v{row['champion_version']} is now previous-champion. {row['reason']}"
                + (f". {inputs['text']}." if inputs else "")
                + (f" Watched for {self.cfg.watch_hours:g} h." if watch else ""),
                "warning" if inputs else "info",
            )
            self._report(row, now)
            return {"action": "promoted", "rollout": row["id"], "status": row["status"]}
        promoted = any(h.get("event") == "promoted" for h in _history(row))
        self._apply_rollback(row)
        row.update(status="rolled_back", weight=0.0)
        self._write(row, "rolled back")
        if promoted:  # the watch: the previous champion is back
            self._alert(
                f"signalops: {self.signal} v{row['challenger_version']} rolled back "
                "during its watch",
                f"{row['reason']}. Champion back to v{row['champion_version']}; "
                f"v{row['challenger_version']} is now previous-champion.",
                "error",
            )
        else:
            self._alert(
                f"signalops: rollout of {self.signal} v{row['challenger_version']} rolled back",
                f"{row['reason']}. Champion v{row['champion_version']} keeps serving.",
                "error",
            )
            self._report(row, now)
        return {"action": "rolled_back", "rollout": row["id"], "reason": row["reason"]}

    def _watch(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        """One look at a new champion in its watch: roll back on a breach, end it when
        ``watch_hours`` have passed."""
        self._publish_weight(0.0)  # no challenger serves while a champion is watched
        if self.registry.aliases().get(c.ALIAS_CHAMPION) != row["challenger_version"]:
            row.update(status="done", reason="the champion alias moved during the watch")
            self._write(row, "watch ended")
            return {"action": "watch_ended", "rollout": row["id"], "reason": row["reason"]}
        record, live = watch_metrics(self.settings, self.warehouse, self.signal, row, now)
        age = now - parse_ts(row["step_started_at"], "step_started_at")
        verdict = judge(self.cfg, False, record, live, age)
        verdict.numbers["watch"] = True
        if verdict.breach:
            row.update(status="rolling_back", reason=f"watch: {verdict.breach}")
            self._write(row, "watch breached", verdict.numbers)
            return self._finish(row)
        if age < timedelta(hours=self.cfg.watch_hours):
            return {"action": "watching", "rollout": row["id"], "waiting": verdict.waiting}
        judged = "judged" if verdict.ready else f"not fully judged ({'; '.join(verdict.waiting)})"
        row.update(
            status="done",
            reason=f"watch of {self.cfg.watch_hours:g} h passed, {judged}",
        )
        self._write(row, "watch done", verdict.numbers)
        self._alert(
            f"signalops: {self.signal} v{row['challenger_version']} passed its watch",
            f"{row['reason']}. {self._figures(verdict)}",
            "info" if verdict.ready else "warning",
        )
        return {"action": "watch_done", "rollout": row["id"], "reason": row["reason"]}

    def _report(self, row: dict[str, Any], now: datetime) -> None:
        """The A/B report on the challenger's run, linked from the row. A report that
        cannot be written must not undo the transition: logged and recorded."""
        try:
            champ, chall = rollout_metrics(self.settings, self.warehouse, self.signal, row, now)
            report = build(row, champ, chall, _history(row), now)
            link = log_report(self.registry, row["challenger_version"], report)
        except Exception as exc:  # MLflow or artifact store errors
            log.warning("%s: A/B report of rollout %s not written: %s", self.signal, row["id"], exc)
            self._write(row, "ab report failed", report={"error": str(exc)[:500]})
            return
        self._write(row, "ab report", report=link)

    def _check_stuck(self, row: dict[str, Any], now: datetime, waiting: Any) -> None:
        """A rollout held at one step past ``rollout.max_step_hours``: alerted once a day."""
        age = now - parse_ts(row["step_started_at"], "step_started_at")
        limit = timedelta(hours=self.cfg.max_step_hours)
        if age <= limit:
            return
        self._alert(
            f"signalops: rollout of {self.signal} v{row['challenger_version']} stuck at "
            f"step {row['step']}",
            f"Weight {row['weight']:g} for {age.total_seconds() / 3600:.1f} h "
            f"(limit {self.cfg.max_step_hours:g} h); still waiting for: {waiting}. "
            "Check that the sidecar serves and logs, and that outcomes mature "
            "(the outcomes DAG), or roll back.",
            "warning",
            key=f"stuck:{row['id']}:{row['step']}",
            window=timedelta(days=1),
        )

    def _inputs(
        self, old: str | None, new: str, old_label: str, new_label: str
    ) -> dict[str, Any] | None:
        """The input difference of version ``new`` from ``old`` with its sentence (``text``),
        or None when they take the same inputs. Not knowing must not stop a rollout: a spec
        that cannot be read is logged and treated as no difference."""
        if old is None or old == new:
            return None
        try:
            diff = input_difference(
                self.registry.feature_spec(old), self.registry.feature_spec(new)
            )
        except Exception as exc:  # MLflow or artifact store errors, a malformed spec
            log.warning("%s: inputs of v%s and v%s not compared: %s", self.signal, old, new, exc)
            return None
        if diff is None:
            return None
        text = describe_input_change(diff, f"{new_label} v{new}", f"{old_label} v{old}")
        return {old_label: old, new_label: new, **diff, "text": text}

    # -- manual rollback ---------------------------------------------------------------------

    def rollback(self, version: str | None = None, reason: str = "") -> dict[str, Any]:
        """Champion back to ``previous-champion`` (or ``version``); recorded and alerted.

        Returns the restored version and the time of the alias change (the sidecar serves
        it within its poll interval)."""
        from signalops.errors import BadInputError

        aliases = self.registry.aliases()
        current = aliases.get(c.ALIAS_CHAMPION)
        target = version or aliases.get(c.ALIAS_PREVIOUS_CHAMPION)
        if target is None:
            raise BadInputError(
                f"{self.signal}: no previous-champion to roll back to; choose a version"
            )
        try:
            self.registry.version(str(target))
        except Exception as exc:  # MLflow's "not found"
            raise BadInputError(f"{self.signal}: no version {target!r}: {exc}") from None
        if target == current:
            return {"restored": target, "changed": False, "alias_changed_at": None}
        active = self.active()
        if active is not None and active["status"] == "watching":  # the watch ends here
            active.update(status="rolled_back", reason=f"manual rollback to v{target}")
            self._write(active, "manual rollback")
        elif active is not None:  # a running rollout judged against the old champion ends
            active.update(status="rolling_back", reason=f"manual rollback to v{target}")
            self._write(active, "manual rollback")
            self._apply_rollback(active)
            active.update(status="rolled_back", weight=0.0)
            self._write(active, "rolled back")
        row = self._new_row(
            current,
            str(target),
            "manual",
            reason or f"manual rollback: v{current} -> v{target}",
            datetime.now(UTC),
        )
        inputs = self._inputs(current, str(target), "champion", "restored")
        self._write(row, "manual rollback requested", inputs=inputs)
        if current is not None:
            self.registry.set_alias(c.ALIAS_PREVIOUS_CHAMPION, current)
        self.registry.set_alias(c.ALIAS_CHAMPION, str(target))
        changed_at = datetime.now(UTC)
        self._write(row, "champion alias moved")
        self._alert(
            f"signalops: {self.signal} rolled back to v{target}",
            f"{row['reason']}. v{current} is now previous-champion."
            + (f" {inputs['text']}." if inputs else ""),
            "warning",
        )
        return {
            "restored": str(target),
            "previous": current,
            "changed": True,
            "alias_changed_at": changed_at.isoformat(),
        }


def _history(row: dict[str, Any]) -> list[dict[str, Any]]:
    history = row.get("history") or []
    return list(json.loads(history) if isinstance(history, str) else history)


def tick(settings: Settings, signal: str | None = None) -> dict[str, Any]:
    canary = Canary(settings, signal)
    try:
        return canary.tick()
    finally:
        canary.close()


def rollback(
    settings: Settings, version: str | None = None, reason: str = "", signal: str | None = None
) -> dict[str, Any]:
    """``Canary.rollback`` for one call (what the rollback DAG runs)."""
    canary = Canary(settings, signal)
    try:
        return canary.rollback(version, reason)
    finally:
        canary.close()
