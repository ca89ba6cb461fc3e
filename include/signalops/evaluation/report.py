"""The evaluation report: challenger, champion and naive baseline on the same holdout.

Every number behind the gate's decision is in the JSON; the markdown is the short summary
shown in the Airflow task log and in MLflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import EvaluationSettings
from signalops.evaluation.gate import decide, paired_bootstrap
from signalops.evaluation.metrics import ml_metrics, trading_metrics


@dataclass
class Scored:
    """One model's holdout probabilities (aligned with the holdout frame's rows)."""

    name: str
    p: np.ndarray
    version: str | None = None


def baseline_probability(train_y: np.ndarray) -> float:
    """The naive model: always the majority class, with the training base rate as probability."""
    return float(np.mean(train_y)) if len(train_y) else 0.5


def evaluate(
    cfg: EvaluationSettings,
    holdout: pd.DataFrame,
    horizon_bars: int,
    bar_minutes: int,
    challenger: Scored,
    baseline: Scored,
    champion: Scored | None,
) -> dict[str, Any]:
    """Metrics of each model, the paired comparison and the gate decision."""
    y = holdout["label_up"].to_numpy(dtype=np.float64)

    def metrics_of(model: Scored) -> dict[str, Any]:
        return {
            "version": model.version,
            "ml": ml_metrics(y, model.p, cfg.threshold),
            "trading": trading_metrics(
                holdout,
                model.p,
                horizon_bars,
                bar_minutes,
                cfg.strategy,
                cfg.threshold,
                cfg.cost_bps,
            ),
        }

    models = {"challenger": metrics_of(challenger), "baseline": metrics_of(baseline)}
    comparison = None
    if champion is not None:
        models["champion"] = metrics_of(champion)
        comparison = paired_bootstrap(
            y,
            challenger.p,
            champion.p,
            pd.to_datetime(holdout["ts"], utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]"),
            cfg.primary_metric,
            cfg.bootstrap_samples,
            cfg.confidence,
            block=horizon_bars,
        )
    decision = decide(
        cfg,
        models["challenger"]["ml"],
        models["baseline"]["ml"],
        models["champion"]["ml"] if champion is not None else None,
        comparison,
    )
    return {
        "primary_metric": cfg.primary_metric,
        "holdout": {
            "rows": len(holdout),
            "start": holdout["ts"].min().isoformat(),
            "end": holdout["ts"].max().isoformat(),
            "symbols": sorted(holdout["symbol"].unique().tolist()),
            "up_share": float(y.mean()),
        },
        "models": models,
        "comparison": comparison,
        "decision": decision.as_dict(),
        "settings": cfg.model_dump(mode="json"),
    }


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(report: dict[str, Any], title: str) -> str:
    """A short human summary of the report."""
    models = report["models"]
    names = [n for n in ("challenger", "champion", "baseline") if n in models]
    header = [
        f"{n}" + (f" v{models[n]['version']}" if models[n].get("version") else "") for n in names
    ]
    rows = [
        ("ml", "roc_auc"),
        ("ml", "log_loss"),
        ("ml", "accuracy"),
        ("ml", "precision"),
        ("ml", "recall"),
        ("ml", "f1"),
        ("ml", "brier"),
        ("trading", "cumulative_return"),
        ("trading", "sharpe"),
        ("trading", "max_drawdown"),
        ("trading", "hit_rate"),
        ("trading", "turnover"),
    ]
    decision = report["decision"]
    verdict = "PASSED" if decision["passed"] else "REJECTED"
    hold = report["holdout"]
    lines = [
        f"### {title}: gate {verdict}",
        "",
        f"Out-of-time holdout: {hold['rows']} rows, {hold['start']} .. {hold['end']}, "
        f"up share {hold['up_share']:.3f}. Primary metric: `{report['primary_metric']}`.",
        "",
        "| metric | " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * len(names),
    ]
    for group, key in rows:
        lines.append(f"| {key} | " + " | ".join(_fmt(models[n][group][key]) for n in names) + " |")
    if report.get("comparison"):
        c = report["comparison"]
        lines += [
            "",
            f"Challenger - champion ({report['primary_metric']}, higher is better): "
            f"{c['difference']:+.4f}, CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}] "
            f"({int(c['samples'])} paired block-bootstrap samples).",
        ]
    lines += ["", "Checks:"]
    for name, check in decision["checks"].items():
        lines.append(f"- {'ok' if check['passed'] else 'FAIL'} `{name}`: {check['detail']}")
    if decision.get("action"):
        lines += ["", f"Action: {decision['action']}"]
    return "\n".join(lines) + "\n"
