"""The A/B report of a finished rollout: champion vs challenger on the same live traffic.

Written when a rollout is promoted or rolled back (``signalops.rollout.canary``), logged on
the challenger's MLflow run as ``ab_report/ab_report.json`` + ``ab_report/ab_report.md``
(``AB_REPORT_DIR``), and linked from the ``rollouts`` row's history (event ``ab report``:
run id and URI). It holds both versions' figures over the whole rollout (predictions,
failed scorings and error rate, matured outcomes, accuracy, log loss, hit rate, net return,
latency p95), the one-sided tests' p-values on them, the numbers the guards saw at each
judged step (from the row's history), and the decision with its reason.
"""

from __future__ import annotations

import json
import math
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from signalops.registry import Registry
from signalops.rollout.guards import worse_accuracy_p, worse_error_rate_p, worse_log_loss_p
from signalops.rollout.outcomes import LiveMetrics

AB_REPORT_DIR = "ab_report"  # run artifact directory
AB_REPORT_JSON = "ab_report.json"
AB_REPORT_MD = "ab_report.md"
FIGURES = ("predictions", "failures", "error_rate", "outcomes", "accuracy", "log_loss",
           "hit_rate", "net_return", "latency_p95_ms")  # fmt: skip


def build(
    row: dict[str, Any],
    champion: LiveMetrics,
    challenger: LiveMetrics,
    history: list[dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    """The report as a JSON-ready dict (pure: the figures come from ``step_metrics``)."""
    tests: dict[str, float | None] = {
        "p_accuracy_worse": None,
        "p_log_loss_worse": None,
        "p_error_rate_worse": None,
    }
    if champion.outcomes >= 2 and challenger.outcomes >= 2:
        tests["p_accuracy_worse"] = worse_accuracy_p(champion, challenger)
        tests["p_log_loss_worse"] = worse_log_loss_p(champion, challenger)
    if champion.scorings and challenger.scorings:
        tests["p_error_rate_worse"] = worse_error_rate_p(champion, challenger)
    judged = [
        {k: h.get(k) for k in ("at", "event", "step", "weight", "reason", "numbers")}
        for h in history
        if h.get("numbers")
    ]
    return {
        "signal": row["signal_name"],
        "rollout_id": row["id"],
        "champion_version": row["champion_version"],
        "challenger_version": row["challenger_version"],
        "started_at": _iso(row["started_at"]),
        "finished_at": now.isoformat(),
        # A promotion's report is written as the watch starts (status "watching").
        "decision": "promoted" if row["status"] in ("promoted", "watching") else row["status"],
        "reason": row["reason"],
        "last_step": row["step"],
        "champion": {k: _clean(champion.as_dict().get(k)) for k in FIGURES},
        "challenger": {k: _clean(challenger.as_dict().get(k)) for k in FIGURES},
        "tests": {k: _clean(v) for k, v in tests.items()},
        "guards": _clean(judged),
    }


def markdown(report: dict[str, Any]) -> str:
    """The report for people (MLflow's artifact view renders it)."""
    ch, cc = report["champion"], report["challenger"]
    lines = [
        f"# A/B report: {report['signal']} v{report['challenger_version']} vs "
        f"champion v{report['champion_version']}",
        "",
        f"**Decision: {report['decision']}**: {report['reason']}",
        "",
        f"Rollout `{report['rollout_id']}`, {report['started_at']} to {report['finished_at']}, "
        f"last step {report['last_step']}.",
        "",
        "| figure | champion | challenger |",
        "| --- | --- | --- |",
        *(f"| {k} | {_fmt(ch.get(k))} | {_fmt(cc.get(k))} |" for k in FIGURES),
        "",
        "One-sided tests (challenger worse than the champion):",
        "",
        *(f"- {k}: {_fmt(v)}" for k, v in report["tests"].items()),
        "",
        "## What the guards saw",
        "",
        "| at | event | step | weight | p accuracy | p log loss | p error rate | score PSI |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(
            f"| {g['at']} | {g['event']} | {g['step']} | {_fmt(g['weight'])} | "
            f"{_fmt(g['numbers'].get('p_accuracy_worse'))} | "
            f"{_fmt(g['numbers'].get('p_log_loss_worse'))} | "
            f"{_fmt(g['numbers'].get('p_error_rate_worse'))} | "
            f"{_fmt(g['numbers'].get('score_psi'))} |"
            for g in report["guards"]
        ),
    ]
    return "\n".join(lines) + "\n"


def log_report(registry: Registry, version: str, report: dict[str, Any]) -> dict[str, str]:
    """Log the report on ``version``'s run; returns its run id and the JSON's URI."""
    run_id = registry.version(version).run_id
    if run_id is None:
        raise ValueError(f"{registry.name} v{version} has no run to log its A/B report on")
    with tempfile.TemporaryDirectory(prefix="signalops-ab-") as tmp:
        folder = Path(tmp)
        (folder / AB_REPORT_JSON).write_text(json.dumps(report, indent=2))
        (folder / AB_REPORT_MD).write_text(markdown(report))
        registry.log_artifacts(run_id, folder, AB_REPORT_DIR)
    return {"run_id": run_id, "uri": f"runs:/{run_id}/{AB_REPORT_DIR}/{AB_REPORT_JSON}"}


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _clean(value: Any) -> Any:
    """JSON-safe: numpy scalars to floats, NaN and infinities to None."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
