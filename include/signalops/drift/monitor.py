"""The hourly drift check: the champion's reference profile against the last window.

``assess`` is the computation (pure: profile + current frame in, verdict out); ``run_check``
wires it to the registry (champion, its profile, spec, evaluation and ONNX model), the
offline store (the current window), the warehouse (``drift_checks`` + ``drift_features``,
rewritten for the same window) and the alert de-duplication.

Severity (documented in the README, thresholds in ``drift`` settings):

* per feature, by PSI: none (< psi_moderate), moderate, significant (>= psi_significant);
  a feature counts as *drifted* by the configured method: PSI >= psi_moderate (``psi``),
  KS p < ks_p_value **and** D >= ks_min_statistic (``ks``: the p-value alone flags tiny
  shifts at large n), or normalized Wasserstein >= wasserstein_threshold;
* overall: **high** when the drifted share >= share_high, the prediction PSI >=
  psi_significant, or accuracy on matured labels fell >= accuracy_drop_high below the
  holdout's; **medium** at share_medium / psi_moderate / accuracy_drop_medium; **low** when
  any feature drifted; else **none**.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import DriftSettings, Settings
from signalops.drift.stats import column_drift

log = logging.getLogger(__name__)

SEVERITIES = ("none", "low", "medium", "high")
RECOMMENDATIONS = {
    "none": ["No action: the inputs and scores look like the training data."],
    "low": ["Keep watching: a few features moved, not enough to act on."],
    "medium": [
        "Look at the top drifted features and their sources (Evidently report).",
        "Consider a retrain on recent data; compare the challenger before promoting it.",
    ],
    "high": [
        "Retrain on recent data (the drift_detected Asset schedules the retrain DAG).",
        "Check the data sources of the top drifted features for breaks or bad ticks.",
        "Watch live accuracy; roll back or pause trading if it keeps falling.",
    ],
}


@dataclass
class DriftCheck:
    signal: str
    model_version: str
    window_start: str
    window_end: str
    rows: int
    status: str  # checked | skipped
    reason: str = ""
    severity: str = "none"
    share_drifted: float = 0.0
    drifted_features: list[str] = field(default_factory=list)
    top_features: list[dict[str, Any]] = field(default_factory=list)
    prediction_psi: float | None = None
    accuracy: float | None = None
    holdout_accuracy: float | None = None
    accuracy_drop: float | None = None
    brier: float | None = None
    holdout_brier: float | None = None
    matured_rows: int = 0
    reasons: list[str] = field(default_factory=list)
    recommendations: list[str] = field(default_factory=list)
    features: list[dict[str, Any]] = field(default_factory=list)
    alert: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if self.status != "checked":
            return f"drift check skipped: {self.reason}"
        top = ", ".join(f"{f['feature']} (PSI {f['psi']:.3f})" for f in self.top_features[:5])
        pred = "n/a" if self.prediction_psi is None else f"{self.prediction_psi:.3f}"
        return (
            f"{self.signal} v{self.model_version}, {self.window_start} .. {self.window_end}: "
            f"severity {self.severity.upper()}; {len(self.drifted_features)}/"
            f"{len(self.features)} features drifted ({self.share_drifted:.0%}), prediction "
            f"PSI {pred}; top: {top or 'none'}; reasons: {'; '.join(self.reasons) or 'none'}"
        )


def _feature_severity(psi: float, cfg: DriftSettings) -> str:
    if psi >= cfg.psi_significant:
        return "significant"
    if psi >= cfg.psi_moderate:
        return "moderate"
    return "none"


def _drifted(stats: dict[str, float], cfg: DriftSettings) -> bool:
    if cfg.method == "ks":
        return (
            stats["ks_p_value"] < cfg.ks_p_value and stats["ks_statistic"] >= cfg.ks_min_statistic
        )
    if cfg.method == "wasserstein":
        return stats["wasserstein"] >= cfg.wasserstein_threshold
    return stats["psi"] >= cfg.psi_moderate


def assess(
    profile: dict[str, Any],
    current: pd.DataFrame,
    names: list[str],
    cfg: DriftSettings,
    scores: np.ndarray | None = None,
    outcomes: tuple[np.ndarray, np.ndarray] | None = None,
    holdout: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Per-feature statistics, prediction and label drift, and the overall verdict.

    ``outcomes``: (matured labels, the champion's scores on those rows); ``holdout``: the
    champion's holdout figures (``accuracy``, ``brier``) from its evaluation report.
    """
    features: list[dict[str, Any]] = []
    for name in names:
        stats = column_drift(profile["features"][name], current[name].to_numpy())
        features.append(
            {
                "feature": name,
                **stats,
                "severity": _feature_severity(stats["psi"], cfg),
                "drifted": _drifted(stats, cfg),
            }
        )
    drifted: list[str] = [str(f["feature"]) for f in features if f["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    top = sorted(features, key=lambda f: f["psi"], reverse=True)[:10]
    prediction_psi = None
    if scores is not None and profile.get("score"):
        prediction_psi = column_drift(profile["score"], scores)["psi"]
    accuracy = brier = drop = None
    matured = 0
    if outcomes is not None:
        labels, probs = outcomes
        matured = len(labels)
        if matured >= cfg.min_outcomes:
            accuracy = float(np.mean((probs > 0.5) == (labels == 1)))
            brier = float(np.mean((probs - labels) ** 2))
            if holdout and holdout.get("accuracy") is not None:
                drop = float(holdout["accuracy"]) - accuracy
    reasons_high, reasons_medium = [], []
    if share >= cfg.share_high:
        reasons_high.append(f"{share:.0%} of features drifted (>= {cfg.share_high:.0%})")
    elif share >= cfg.share_medium:
        reasons_medium.append(f"{share:.0%} of features drifted (>= {cfg.share_medium:.0%})")
    if prediction_psi is not None:
        if prediction_psi >= cfg.psi_significant:
            reasons_high.append(f"prediction PSI {prediction_psi:.3f} >= {cfg.psi_significant}")
        elif prediction_psi >= cfg.psi_moderate:
            reasons_medium.append(f"prediction PSI {prediction_psi:.3f} >= {cfg.psi_moderate}")
    if drop is not None:
        text = f"accuracy {accuracy:.3f} vs holdout {holdout['accuracy']:.3f}"  # type: ignore[index]
        if drop >= cfg.accuracy_drop_high:
            reasons_high.append(f"{text}: down {drop * 100:.1f} points")
        elif drop >= cfg.accuracy_drop_medium:
            reasons_medium.append(f"{text}: down {drop * 100:.1f} points")
    if reasons_high:
        severity, reasons = "high", reasons_high + reasons_medium
    elif reasons_medium:
        severity, reasons = "medium", reasons_medium
    elif drifted:
        severity = "low"
        reasons = [f"{len(drifted)} feature(s) drifted: {', '.join(drifted[:5])}"]
    else:
        severity, reasons = "none", []
    return {
        "severity": severity,
        "share_drifted": share,
        "drifted_features": drifted,
        "top_features": [
            {k: f[k] for k in ("feature", "psi", "ks_statistic", "wasserstein", "severity")}
            for f in top
            if f["psi"] >= cfg.psi_moderate or f["drifted"]
        ],
        "prediction_psi": prediction_psi,
        "accuracy": accuracy,
        "brier": brier,
        "accuracy_drop": drop,
        "matured_rows": matured,
        "reasons": reasons,
        "recommendations": RECOMMENDATIONS[severity],
        "features": features,
    }


# ---------------------------------------------------------------------------------------
# the check as the DAG runs it


@dataclass
class Champion:
    version: str
    profile: dict[str, Any]
    spec: dict[str, Any]
    holdout: dict[str, float]
    model_path: Path


def load_champion(settings: Settings, signal: str, work: Path) -> Champion | None:
    """The champion's version and artifacts (None when there is no champion yet)."""
    from signalops.registry import Registry
    from signalops.registry import contracts as c

    registry = Registry(settings, signal)
    info = registry.by_alias(c.ALIAS_CHAMPION)
    if info is None:
        return None
    folder = work / f"v{info.version}"

    def fetch(name: str) -> Path:
        return registry.download_file(info.version, name, folder)

    profile = json.loads(fetch(c.REFERENCE_PROFILE).read_text())
    spec = json.loads(fetch(c.FEATURE_SPEC).read_text())
    evaluation = json.loads(fetch(c.EVALUATION_JSON).read_text())
    ml = evaluation.get("models", {}).get("challenger", {}).get("ml", {})  # its own figures
    return Champion(
        info.version,
        profile,
        spec,
        {k: float(ml[k]) for k in ("accuracy", "brier") if k in ml},
        fetch(c.ONNX_MODEL),
    )


def run_check(
    settings: Settings,
    end: datetime,
    window_hours: float | None = None,
    signal: str | None = None,
) -> DriftCheck:
    """Check ``[end - window, end)`` against the champion; persist it; decide on alerting."""
    from signalops.features.definitions import LABEL_UP
    from signalops.features.offline_store import OfflineStore
    from signalops.onnx_model import load_session, predict_onnx

    cfg = settings.drift
    signal = signal or settings.signal_name
    hours = window_hours or cfg.window_hours
    start = end - timedelta(hours=hours)
    work = settings.state_dir / "drift" / "champion"
    champion = load_champion(settings, signal, work)
    window = (start.isoformat(), end.isoformat())
    if champion is None:
        check = DriftCheck(signal, "", *window, 0, "skipped", "no champion registered yet")
        return check
    names = list(champion.spec["names"])
    current = OfflineStore(settings.lake_dir).read(
        champion.spec["feature_set_version"], start=start, end=end, columns=[*names, LABEL_UP]
    )
    current = current.dropna(subset=names)
    if len(current) < cfg.min_rows:
        check = DriftCheck(
            signal,
            champion.version,
            *window,
            len(current),
            "skipped",
            f"only {len(current)} feature rows in {window[0]} .. {window[1]} "
            f"(drift.min_rows is {cfg.min_rows}): too few to judge, no verdict",
        )
        return check
    session = load_session(champion.model_path)
    scores = predict_onnx(session, current[names].to_numpy(np.float32))
    matured = current[LABEL_UP].notna().to_numpy()
    outcomes = (current.loc[matured, LABEL_UP].to_numpy(np.float64), scores[matured])
    verdict = assess(champion.profile, current, names, cfg, scores, outcomes, champion.holdout)
    check = DriftCheck(
        signal,
        champion.version,
        *window,
        len(current),
        "checked",
        holdout_accuracy=champion.holdout.get("accuracy"),
        holdout_brier=champion.holdout.get("brier"),
        **verdict,
    )
    check.alert = persist(settings, check)
    log.info("drift: %s", check.summary())
    return check


def persist(settings: Settings, check: DriftCheck, report_path: str | None = None) -> bool:
    """Write the check (replacing a previous check of the same window); return whether it
    should alert: medium or high, and no alert of at least this severity for this signal
    within ``drift.realert_hours`` before (an ongoing drift alerts once, not hourly)."""
    import sqlalchemy as sa

    from signalops.warehouse import Warehouse, drift_checks_table, drift_features_table

    cfg = settings.drift
    end = pd.Timestamp(check.window_end).to_pydatetime()
    key = {"signal_name": check.signal, "model_version": check.model_version, "window_end": end}
    rank = SEVERITIES.index(check.severity)
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        t = drift_checks_table
        with warehouse.engine.begin() as conn:
            previous = conn.execute(
                sa.select(t.c.alerted, t.c.report_path).where(
                    *(t.c[k] == v for k, v in key.items())
                )
            ).first()
            recent = conn.execute(
                sa.select(t.c.severity).where(
                    t.c.signal_name == check.signal,
                    t.c.alerted.is_(True),
                    t.c.window_end >= end - timedelta(hours=cfg.realert_hours),
                    t.c.window_end < end,
                )
            ).fetchall()
            already = previous is not None and bool(previous.alerted)
            covered = any(SEVERITIES.index(r.severity) >= rank for r in recent)
            alert = rank >= SEVERITIES.index("medium") and not covered and not already
            for table in (drift_features_table, drift_checks_table):
                conn.execute(table.delete().where(*(table.c[k] == v for k, v in key.items())))
            conn.execute(
                t.insert(),
                [
                    {
                        **key,
                        "window_start": pd.Timestamp(check.window_start).to_pydatetime(),
                        "checked_at": datetime.now(UTC),
                        "rows": check.rows,
                        "severity": check.severity,
                        "share_drifted": check.share_drifted,
                        "prediction_psi": check.prediction_psi,
                        "accuracy": check.accuracy,
                        "holdout_accuracy": check.holdout_accuracy,
                        "matured_rows": check.matured_rows,
                        "reasons": check.reasons,
                        "recommendations": check.recommendations,
                        "alerted": alert or already,
                        "report_path": report_path or (previous.report_path if previous else None),
                    }
                ],
            )
            conn.execute(
                drift_features_table.insert(),
                [
                    {
                        **key,
                        "feature": f["feature"],
                        "psi": f["psi"],
                        "ks_statistic": f["ks_statistic"],
                        "ks_p_value": f["ks_p_value"],
                        "wasserstein": f["wasserstein"],
                        "severity": f["severity"],
                        "drifted": bool(f["drifted"]),
                    }
                    for f in check.features
                ],
            )
    return alert


def set_report_path(settings: Settings, check: DriftCheck, path: str) -> None:
    import sqlalchemy as sa

    from signalops.warehouse import Warehouse, drift_checks_table

    t = drift_checks_table
    with Warehouse(settings.warehouse_url) as warehouse, warehouse.engine.begin() as conn:
        conn.execute(
            sa.update(t)
            .where(
                t.c.signal_name == check.signal,
                t.c.model_version == check.model_version,
                t.c.window_end == pd.Timestamp(check.window_end).to_pydatetime(),
            )
            .values(report_path=path)
        )
