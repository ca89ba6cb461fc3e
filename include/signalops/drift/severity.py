"""The drift verdict: ``assess`` judges a window against the champion's reference profile.

Pure: the reference profile (``signalops.drift.profile``), the current frame, the champion's
scores and matured labels in; per-feature statistics, prediction and label drift and the
overall severity with its reasons out. ``signalops.drift.monitor.run_check`` runs it on the
newest window.

Severity (documented in the README, "Drift: how severity is calibrated"; thresholds in
``drift`` settings). Every statistic is judged against what the champion's own training
data produces on windows of the same size (the profile's null critical values, see
``drift.profile``), and must also be material:

* per feature: *drifted* when it is past the null (PSI, KS D or normalized Wasserstein
  above its critical value at the window's row count, interpolated in log n; the three
  are calibrated jointly, so a feature of the reference is past them in 1 % of windows)
  **and** the effect is material by ``drift.method``: PSI >= psi_moderate (``psi``); KS
  p < ks_p_value and D >= ks_min_statistic (``ks``); normalized Wasserstein >=
  wasserstein_threshold. Past the null, by PSI: moderate (>= psi_moderate) or significant
  (>= psi_significant);
* overall: **high** when the drifted share >= share_high, the prediction PSI is past its
  critical value and >= psi_significant, or accuracy on matured labels fell significantly
  (one-sided binomial test at ``significance`` vs the holdout accuracy, and past the null's
  accuracy drop for that many labels) and by >= accuracy_drop_high; **medium** at
  share_medium / psi_moderate / accuracy_drop_medium. A drifted share counts only when
  more features drifted than reference windows of that size reach at level
  ``significance`` (features move together). **low** when any feature drifted; else
  **none**. Under the null each of the three parts fires in about 1 % of windows.

A profile without null critical values (profile version 1) falls back to the thresholds
alone (logged): on small windows that rule calls noise drift.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import DriftSettings
from signalops.drift.check import CRITICAL_COLUMNS, RECOMMENDATIONS
from signalops.drift.stats import column_drift
from signalops.evaluation import metrics as ml

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# null critical values at the window's size


def critical_at(sizes: list[int], values: list[float], rows: int, log_values: bool = True) -> float:
    """A critical value at ``rows``: interpolated linearly in log n (and in the log of the
    value, as they fall like a power of n), clamped to the calibrated sizes."""
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    at = math.log(max(rows, 1))
    if not log_values:
        return float(np.interp(at, x, y))
    return float(np.exp(np.interp(at, x, np.log(np.maximum(y, 1e-12)))))


def count_at(sizes: list[int], counts: list[int], rows: int) -> int:
    """The null's drifted-feature count at ``rows``: the larger of the two calibrated sizes
    around it (a count does not interpolate)."""
    i = int(np.searchsorted(np.asarray(sizes), rows))
    return int(max(counts[max(i - 1, 0)], counts[min(i, len(counts) - 1)]))


def _feature_critical(null: dict[str, Any] | None, name: str, rows: int) -> dict[str, float]:
    if not null or name not in null["features"]:
        return {}
    return {s: critical_at(null["sizes"], v, rows) for s, v in null["features"][name].items()}


def _feature_severity(psi: float, cfg: DriftSettings, beyond_null: bool) -> str:
    if not beyond_null:
        return "none"  # within what the reference itself gives at this size
    if psi >= cfg.psi_significant:
        return "significant"
    if psi >= cfg.psi_moderate:
        return "moderate"
    return "none"


def _drifted(stats: dict[str, float], cfg: DriftSettings, critical: dict[str, float]) -> bool:
    """Material by the method's threshold and, when calibrated, past its null critical value."""
    if cfg.method == "ks":
        material = (
            stats["ks_p_value"] < cfg.ks_p_value and stats["ks_statistic"] >= cfg.ks_min_statistic
        )
    elif cfg.method == "wasserstein":
        material = stats["wasserstein"] >= cfg.wasserstein_threshold
    else:
        material = stats["psi"] >= cfg.psi_moderate
    return material and _beyond_null(stats, critical)


def _beyond_null(stats: dict[str, float], critical: dict[str, float]) -> bool:
    """Past the null critical value of any of the three distances (True when uncalibrated)."""
    return not critical or any(stats[s] > c for s, c in critical.items())


def _accuracy_p_value(correct: int, matured: int, holdout: float) -> float:
    """One-sided binomial p-value of ``correct`` hits in ``matured`` at the holdout accuracy."""
    from scipy.stats import binom

    return float(binom.cdf(correct, matured, min(max(holdout, 1e-9), 1 - 1e-9)))


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
    null = profile.get("null")
    if not null:
        log.warning(
            "drift: the reference profile (version %s) has no null critical values: severity "
            "by the fixed thresholds alone, which call noise drift on small windows; "
            "retrain to get a calibrated profile",
            profile.get("profile_version", 1),
        )
    features = _feature_rows(profile, current, names, cfg, null)
    drifted: list[str] = [str(f["feature"]) for f in features if f["drifted"]]
    share = len(drifted) / len(features) if features else 0.0
    top = sorted(features, key=lambda f: f["psi"], reverse=True)[:10]
    null_count = _null_drifted_count(null, len(current))
    prediction_psi, prediction_critical = _prediction_drift(profile, null, scores)
    labels = _label_drift(cfg, null, outcomes, holdout)
    high, medium = _share_reasons(cfg, share, len(drifted), null_count)
    for more_high, more_medium in (
        _prediction_reasons(cfg, prediction_psi, prediction_critical),
        _accuracy_reasons(cfg, labels, holdout),
    ):
        high += more_high
        medium += more_medium
    severity, reasons = _severity(high, medium, drifted)
    return {
        "calibrated": bool(null),
        "severity": severity,
        "share_drifted": share,
        "drifted_features": drifted,
        "drifted_count_critical": null_count,
        "top_features": [
            {k: f[k] for k in ("feature", "psi", "ks_statistic", "wasserstein", "severity")}
            for f in top
            if f["drifted"] or f["severity"] != "none"
        ],
        "prediction_psi": prediction_psi,
        "prediction_psi_critical": prediction_critical,
        "accuracy": labels.accuracy,
        "brier": labels.brier,
        "accuracy_drop": labels.drop,
        "accuracy_p_value": labels.p_value,
        "matured_rows": labels.matured,
        "reasons": reasons,
        "recommendations": RECOMMENDATIONS[severity],
        "features": features,
    }


@dataclass
class _LabelDrift:
    """Accuracy on the window's matured labels against the holdout (None: not judged)."""

    matured: int = 0
    accuracy: float | None = None
    brier: float | None = None
    drop: float | None = None  # holdout accuracy - accuracy
    p_value: float | None = None  # one-sided binomial, at the holdout accuracy
    drop_critical: float | None = None  # the null's accuracy drop for as many labels


def _feature_rows(
    profile: dict[str, Any],
    current: pd.DataFrame,
    names: list[str],
    cfg: DriftSettings,
    null: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Each feature's statistics, null critical values, severity and drifted flag."""
    features: list[dict[str, Any]] = []
    for name in names:
        stats = column_drift(profile["features"][name], current[name].to_numpy())
        critical = _feature_critical(null, name, int(stats["rows"]))
        features.append(
            {
                "feature": name,
                **stats,
                **{CRITICAL_COLUMNS[s]: critical.get(s) for s in CRITICAL_COLUMNS},
                "severity": _feature_severity(stats["psi"], cfg, _beyond_null(stats, critical)),
                "drifted": _drifted(stats, cfg, critical),
            }
        )
    return features


def _null_drifted_count(null: dict[str, Any] | None, rows: int) -> int | None:
    """How many drifted features the null reaches at this size (at ``significance``); None
    when uncalibrated (then any count counts)."""
    if null and "drifted_count" in null:
        return count_at(null["sizes"], null["drifted_count"], rows)
    return None


def _prediction_drift(
    profile: dict[str, Any], null: dict[str, Any] | None, scores: np.ndarray | None
) -> tuple[float | None, float | None]:
    """(PSI of the scores on the reference's, its null critical value at this size)."""
    if scores is None or not profile.get("score"):
        return None, None
    psi = column_drift(profile["score"], scores)["psi"]
    critical = None
    if null and null.get("score"):
        critical = critical_at(null["sizes"], null["score"]["psi"], len(scores))
    return psi, critical


def _label_drift(
    cfg: DriftSettings,
    null: dict[str, Any] | None,
    outcomes: tuple[np.ndarray, np.ndarray] | None,
    holdout: dict[str, float] | None,
) -> _LabelDrift:
    if outcomes is None:
        return _LabelDrift()
    labels, probs = outcomes
    result = _LabelDrift(matured=len(labels))
    if result.matured < cfg.min_outcomes:
        return result
    hits = ml.correct_rows(labels, probs)
    result.accuracy = float(np.mean(hits))
    result.brier = float(np.mean(ml.brier_rows(labels, probs)))
    if holdout and holdout.get("accuracy") is not None:
        result.drop = float(holdout["accuracy"]) - result.accuracy
        result.p_value = _accuracy_p_value(
            int(hits.sum()), result.matured, float(holdout["accuracy"])
        )
        if null and null.get("accuracy_drop"):
            result.drop_critical = critical_at(
                null["sizes"], null["accuracy_drop"], result.matured, log_values=False
            )
    return result


def _share_reasons(
    cfg: DriftSettings, share: float, drifted: int, null_count: int | None
) -> tuple[list[str], list[str]]:
    """(high, medium) reasons from the drifted share: only with more drifted features than
    the null reaches at this size (features move together), or any count uncalibrated."""
    many = null_count is None or drifted > null_count
    beyond = "" if null_count is None else f"; the reference reaches {null_count} at this size"
    if share >= cfg.share_high and many:
        return [f"{share:.0%} of features drifted (>= {cfg.share_high:.0%}{beyond})"], []
    if share >= cfg.share_medium and many:
        return [], [f"{share:.0%} of features drifted (>= {cfg.share_medium:.0%}{beyond})"]
    return [], []


def _prediction_reasons(
    cfg: DriftSettings, psi: float | None, critical: float | None
) -> tuple[list[str], list[str]]:
    """(high, medium) reasons from the prediction PSI, when past its null critical value."""
    if psi is None or (critical is not None and not psi > critical):
        return [], []
    text = f"prediction PSI {psi:.3f}"
    if critical is not None:
        text += f" (reference windows of this size reach {critical:.3f})"
    if psi >= cfg.psi_significant:
        return [f"{text} >= {cfg.psi_significant}"], []
    if psi >= cfg.psi_moderate:
        return [], [f"{text} >= {cfg.psi_moderate}"]
    return [], []


def _accuracy_reasons(
    cfg: DriftSettings, labels: _LabelDrift, holdout: dict[str, float] | None
) -> tuple[list[str], list[str]]:
    """(high, medium) reasons from an accuracy drop. A drop counts when it is unlikely at
    the holdout accuracy (binomial, independent labels) and beyond what reference windows of
    as many labels show (autocorrelated labels), and large enough to matter."""
    drop, p_value = labels.drop, labels.p_value
    if drop is None or p_value is None or not p_value < cfg.significance or not holdout:
        return [], []
    if labels.drop_critical is not None and not drop > labels.drop_critical:
        return [], []
    text = (
        f"accuracy {labels.accuracy:.3f} vs holdout {holdout['accuracy']:.3f} on "
        f"{labels.matured} matured labels (one-sided p {p_value:.2g}): down "
        f"{drop * 100:.1f} points"
    )
    if drop >= cfg.accuracy_drop_high:
        return [text], []
    if drop >= cfg.accuracy_drop_medium:
        return [], [text]
    return [], []


def _severity(high: list[str], medium: list[str], drifted: list[str]) -> tuple[str, list[str]]:
    """The overall severity and its reasons (high's first)."""
    if high:
        return "high", high + medium
    if medium:
        return "medium", medium
    if drifted:
        return "low", [f"{len(drifted)} feature(s) drifted: {', '.join(drifted[:5])}"]
    return "none", []
