"""The canary state machine: shadow -> 1% -> 10% -> 50% -> 100% -> champion, or roll back.

One ``tick`` per run of the ``canary`` DAG, per signal:

1. **Repair** a transition a crash left half-done (below).
2. **Start / supersede**: a ``challenger`` alias with no active rollout starts one (shadow
   step); a rollout for an older challenger is marked ``superseded`` (recorded, alerted)
   and a new one starts; a rollout whose challenger alias vanished is closed.
3. **Judge** the current step on live data since the step started (``rollout.*``):
   latency p95 and score distribution (PSI) against the champion; in the shadow step also
   the share of requests where both give the same BUY/SELL/HOLD; once ``min_outcomes``
   matured outcomes exist for both, live accuracy and log loss must not be significantly
   worse (one-sided tests at ``significance``). A breach rolls back at once.
4. **Advance** when the step has lasted ``min_step_minutes`` with ``min_predictions``
   challenger rows and every guard holds; after the last step (w = 1) **promote**.

Crash safety: every transition writes its intent to the ``rollouts`` row first
(``promoting`` / ``rolling_back``, or the new step and weight) and then applies it to the
registry with idempotent calls (aliases, the canary-weight tag). A run killed in between
leaves a row whose registry side the next tick re-applies, then completes. Promotion
sets ``previous-champion`` before it moves ``champion``; an alias points at one version,
so there is always exactly one champion.

A challenger whose inputs differ from the champion's (feature set, feature names or their
order, from each version's ``feature_spec.json``) is called out when its rollout starts
and when it is promoted, as is a manual rollback to a version with other inputs: callers
that send features inline must send the other ones. The row's history entry carries the
difference (``inputs``) and the Slack alert says it.
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from signalops.config import RolloutSettings, Settings
from signalops.evaluation import metrics as ml
from signalops.registry import Registry
from signalops.registry import contracts as c
from signalops.rollout.outcomes import LiveMetrics, live_metrics
from signalops.warehouse import Warehouse, rollouts
from signalops.warehouse import predictions as prediction_rows
from signalops.windows import parse_ts

log = logging.getLogger(__name__)

ACTIVE = rollouts.ACTIVE  # the statuses of a rollout in progress
ROLLOUT_ALERT_WINDOW = timedelta(hours=1)  # a retried tick does not repeat its alert


@dataclass
class Verdict:
    breach: str | None = None  # why it must roll back
    ready: bool = False  # enough data and time to advance
    waiting: list[str] = field(default_factory=list)  # what it still waits for
    numbers: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# guards (pure)


def _psi(a: np.ndarray, b: np.ndarray, bins: int = 10) -> float:
    """PSI of ``b`` on ``a``'s quantile bins, with half a count added to every bin: live
    samples are small and correlated, and an empty bin must not read as a collapse."""
    from signalops.drift.profile import column_profile
    from signalops.drift.stats import bin_counts, psi

    profile = column_profile(a, bins, 10)
    return psi(np.asarray(profile["counts"]) + 0.5, bin_counts(b, profile["edges"]) + 0.5)


def worse_accuracy_p(champion: LiveMetrics, challenger: LiveMetrics) -> float:
    """One-sided p-value of "the challenger's live accuracy is lower" (two-proportion z)."""
    from scipy.stats import norm

    n1, n2 = champion.outcomes, challenger.outcomes
    a1, a2 = champion.accuracy or 0.0, challenger.accuracy or 0.0
    pooled = (a1 * n1 + a2 * n2) / (n1 + n2)
    se = math.sqrt(max(pooled * (1 - pooled) * (1 / n1 + 1 / n2), 1e-12))
    return float(norm.sf((a1 - a2) / se))


def worse_log_loss_p(champion: LiveMetrics, challenger: LiveMetrics) -> float:
    """One-sided p-value of "the challenger's log loss is higher" (Welch's t-test)."""
    from scipy.stats import ttest_ind

    result = ttest_ind(
        ml.log_loss_rows(challenger.labels, challenger.probs),
        ml.log_loss_rows(champion.labels, champion.probs),
        equal_var=False,
        alternative="greater",
    )
    return float(result.pvalue)


def judge(
    cfg: RolloutSettings,
    shadow_step: bool,
    champion: LiveMetrics,
    challenger: LiveMetrics,
    step_age: timedelta,
    agreement: float | None = None,
) -> Verdict:
    v = Verdict()
    v.numbers = {
        "champion": champion.as_dict(),
        "challenger": challenger.as_dict(),
        "step_minutes": round(step_age.total_seconds() / 60, 2),
    }
    enough = challenger.predictions >= cfg.min_predictions and champion.predictions > 0
    comparable = min(len(champion.scores), len(challenger.scores)) >= cfg.min_compare_rows
    if enough and challenger.predictions >= cfg.min_compare_rows:
        if (
            challenger.latency_p95_ms is not None
            and champion.latency_p95_ms is not None
            and challenger.latency_p95_ms
            > champion.latency_p95_ms * cfg.max_latency_ratio + cfg.latency_slack_ms
        ):
            v.breach = (
                f"latency p95 {challenger.latency_p95_ms:.2f} ms > {cfg.max_latency_ratio} x "
                f"champion {champion.latency_p95_ms:.2f} ms + {cfg.latency_slack_ms} ms"
            )
            return v
        if comparable:
            score_psi = _psi(champion.scores, challenger.scores)
            v.numbers["score_psi"] = score_psi
            if score_psi > cfg.max_score_psi:
                v.breach = (
                    f"score distribution PSI {score_psi:.3f} vs champion > {cfg.max_score_psi}"
                )
                return v
    if enough:
        if shadow_step and agreement is not None:
            v.numbers["agreement"] = agreement
            if agreement < cfg.min_agreement:
                v.breach = f"signal agreement {agreement:.2f} with champion < {cfg.min_agreement}"
                return v
    else:
        v.waiting.append(
            f"{challenger.predictions}/{cfg.min_predictions} challenger predictions at the step"
        )
    if champion.outcomes >= cfg.min_outcomes and challenger.outcomes >= cfg.min_outcomes:
        p_acc = worse_accuracy_p(champion, challenger)
        p_ll = worse_log_loss_p(champion, challenger)
        v.numbers.update(p_accuracy_worse=p_acc, p_log_loss_worse=p_ll)
        if p_acc < cfg.significance:
            v.breach = (
                f"live accuracy {challenger.accuracy:.3f} vs champion {champion.accuracy:.3f} "
                f"is significantly worse (p = {p_acc:.4f} < {cfg.significance}, "
                f"{challenger.outcomes} vs {champion.outcomes} outcomes)"
            )
            return v
        if p_ll < cfg.significance:
            v.breach = (
                f"live log loss {challenger.log_loss:.4f} vs champion {champion.log_loss:.4f} "
                f"is significantly worse (p = {p_ll:.4f} < {cfg.significance})"
            )
            return v
    if step_age < timedelta(minutes=cfg.min_step_minutes):
        v.waiting.append(f"{step_age} at the step of {cfg.min_step_minutes} min")
    v.ready = enough and not v.waiting
    return v


# ---------------------------------------------------------------------------------------
# inputs of two versions (pure)


def input_difference(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """How ``new``'s feature spec differs from ``old``'s: feature set, names added and
    removed, same names in another order; None when they take the same inputs."""
    old_names, new_names = list(old.get("names", [])), list(new.get("names", []))
    old_set, new_set = (
        str(old.get("feature_set_version", "?")),
        str(new.get("feature_set_version", "?")),
    )
    if old_set == new_set and old_names == new_names:
        return None
    return {
        "feature_set": [old_set, new_set],
        "added": [n for n in new_names if n not in old_names],
        "removed": [n for n in old_names if n not in new_names],
        "reordered": sorted(old_names) == sorted(new_names) and old_names != new_names,
    }


def describe_input_change(diff: dict[str, Any], new: str, old: str) -> str:
    """One sentence, e.g. "challenger v5 takes other inputs than champion v4: feature set
    v1 -> v2; added [a], removed [b]"."""
    old_set, new_set = diff["feature_set"]
    parts = [
        f"feature set {old_set} -> {new_set}" if old_set != new_set else f"feature set {new_set}"
    ]
    if diff["added"]:
        parts.append(f"added {diff['added']}")
    if diff["removed"]:
        parts.append(f"removed {diff['removed']}")
    if diff["reordered"]:
        parts.append("the same features in another order")
    if not (diff["added"] or diff["removed"] or diff["reordered"]):
        parts.append("the same feature names")
    return f"{new} takes other inputs than {old}: " + "; ".join(parts)


# ---------------------------------------------------------------------------------------
# the state machine (warehouse row + registry)


class Canary:
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

    def _write(
        self,
        row: dict[str, Any],
        event: str,
        numbers: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
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
        if self.registry.aliases().get(c.ALIAS_CHALLENGER) == row["challenger_version"]:
            self.registry.delete_alias(c.ALIAS_CHALLENGER)
        self._publish_weight(0.0)

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
        if active is not None:  # a running rollout judged against the old champion ends
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

    # -- one run -----------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> dict[str, Any]:
        now = now or datetime.now(UTC)
        row = self.active()
        if row is not None and row["status"] != "active":
            return self._finish(row)  # a crash left it half-done: complete it
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

    def _metrics(
        self, row: dict[str, Any], now: datetime
    ) -> tuple[LiveMetrics, LiveMetrics, float | None]:
        """Predictions, latency and scores of both since the step started; outcomes since
        the rollout started (they mature slowly; the challenger's shadow outcomes count)."""
        shadow = row["weight"] == 0
        step_since = parse_ts(row["step_started_at"], "step_started_at")
        since = parse_ts(row["started_at"], "started_at")
        version, old = row["challenger_version"], row["champion_version"]
        roles = ("shadow",) if shadow else ("challenger",)

        def metrics(v: str, of: tuple[str, ...], start: datetime) -> LiveMetrics:
            return live_metrics(self.settings, self.warehouse, self.signal, v, of, start, now)

        # The champion on the same traffic (the step's); at 100% it serves nothing at the
        # step: its latency over the rollout so far, no score comparison (earlier steps did).
        champ_all = metrics(old, ("champion",), since)
        champ = metrics(old, ("champion",), step_since)
        if champ.predictions == 0:
            champ = replace(champ_all, scores=np.empty(0))
        champ = _with_outcomes(champ, champ_all)
        chall = metrics(version, roles, step_since)
        chall_all = metrics(version, ("shadow", "challenger"), since)
        agreement = self._agreement(row, step_since, now) if shadow else None
        return champ, _with_outcomes(chall, chall_all), agreement

    def _agreement(self, row: dict[str, Any], since: datetime, now: datetime) -> float | None:
        """Share of requests where the shadow and the champion make the same call
        (BUY/SELL/HOLD from their probabilities, before the risk guard)."""
        with self.warehouse.connect() as conn:
            pairs = prediction_rows.shadow_pairs(
                conn, self.signal, row["challenger_version"], since, now
            )
        if not pairs:
            return None
        label = self.settings.serving.label
        return float(np.mean([label(a) == label(b) for a, b in pairs]))

    def _judge(self, row: dict[str, Any], now: datetime) -> dict[str, Any]:
        champ, chall, agreement = self._metrics(row, now)
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
        if row["status"] == "promoting":
            self._apply_promotion(row)
            row.update(status="promoted", step=len(self.cfg.steps) - 1, weight=1.0)
            inputs = self._inputs(
                row["champion_version"], row["challenger_version"], "champion", "challenger"
            )
            self._write(row, "promoted", inputs=inputs)
            self._alert(
                f"signalops: {self.signal} v{row['challenger_version']} promoted to champion",
                f"v{row['champion_version']} is now previous-champion. {row['reason']}"
                + (f". {inputs['text']}." if inputs else ""),
                "warning" if inputs else "info",
            )
            return {"action": "promoted", "rollout": row["id"]}
        self._apply_rollback(row)
        row.update(status="rolled_back", weight=0.0)
        self._write(row, "rolled back")
        self._alert(
            f"signalops: rollout of {self.signal} v{row['challenger_version']} rolled back",
            f"{row['reason']}. Champion v{row['champion_version']} keeps serving.",
            "error",
        )
        return {"action": "rolled_back", "rollout": row["id"], "reason": row["reason"]}


def _with_outcomes(step: LiveMetrics, whole: LiveMetrics) -> LiveMetrics:
    return replace(
        step,
        outcomes=whole.outcomes,
        accuracy=whole.accuracy,
        log_loss=whole.log_loss,
        hit_rate=whole.hit_rate,
        net_return=whole.net_return,
        labels=whole.labels,
        probs=whole.probs,
    )


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
