"""The evaluation report: challenger, champion and naive baseline on the same holdout.

Every number behind the gate's decision is in the JSON; the markdown is the short summary
shown in the Airflow task log and in MLflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from signalops.calendar import MarketCalendar, annualization
from signalops.config import EvaluationSettings
from signalops.evaluation.gate import RULES, decide, paired_bootstrap
from signalops.evaluation.metrics import ml_metrics, trading_metrics


@dataclass
class Scored:
    """One model's holdout probabilities (aligned with the holdout frame's rows)."""

    name: str
    p: np.ndarray
    version: str | None = None


@dataclass(frozen=True)
class Annualization:
    """Bars per year the Sharpe is annualized with, and where the figure came from."""

    bars_per_year: float
    source: Literal["observed", "calendar"]


def annualization_of(
    ts: pd.Series, symbols: pd.Series | None, calendar: MarketCalendar
) -> Annualization:
    """Bars per year observed in the data (~252 for daily weekday bars), else the calendar's."""
    return Annualization(*annualization(ts, symbols, calendar))


def baseline_probability(train_y: np.ndarray) -> float:
    """The naive model: always the majority class, with the training base rate as probability."""
    return float(np.mean(train_y)) if len(train_y) else 0.5


def evaluate(
    cfg: EvaluationSettings,
    holdout: pd.DataFrame,
    horizon_bars: int,
    annual: Annualization,
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
                annual.bars_per_year,
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
            threshold=cfg.threshold,
        )
    decision = decide(cfg, models["challenger"], models["baseline"], comparison)
    return {
        "primary_metric": cfg.primary_metric,
        "holdout": {
            "rows": len(holdout),
            "start": holdout["ts"].min().isoformat(),
            "end": holdout["ts"].max().isoformat(),
            "symbols": sorted(holdout["symbol"].unique().tolist()),
            "up_share": float(y.mean()),
        },
        "annualization": {
            **asdict(annual),
            "horizon_bars": horizon_bars,
            "periods_per_year": annual.bars_per_year / horizon_bars,
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
    annual = report.get("annualization")
    if annual:
        source = "observed in the data" if annual["source"] == "observed" else "market calendar"
        lines += [
            "",
            f"Sharpe: after `cost_bps` costs, annualized with {annual['bars_per_year']:.1f} bars "
            f"per year ({source}) and one decision every {annual['horizon_bars']} bars: "
            f"{annual['periods_per_year']:.1f} periods per year.",
        ]
    lines += [
        "",
        "| gate rule | requirement | setting | result | numbers |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, check in decision["checks"].items():
        setting = f"`{check['setting']}` = {check['threshold']}" if check["setting"] else "-"
        result = {"pass": "pass", "fail": "**FAIL**"}.get(check["status"], check["status"])
        lines.append(f"| `{name}` | {check['rule']} | {setting} | {result} | {check['detail']} |")
    if decision.get("action"):
        lines += ["", f"Action: {decision['action']}"]
    return "\n".join(lines) + "\n"


def rules_table() -> str:
    """The gate's rules with their settings and defaults, as a markdown table (README)."""
    defaults = EvaluationSettings()
    lines = ["| rule | requirement | setting | default |", "| --- | --- | --- | --- |"]
    for rule in RULES:
        setting = f"`evaluation.{rule.setting}`" if rule.setting else "-"
        default = rule.threshold(defaults) if rule.setting else "-"
        lines.append(f"| `{rule.name}` | {rule.text} | {setting} | {default} |")
    return "\n".join(lines) + "\n"
