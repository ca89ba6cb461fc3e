"""The drift check: the champion's reference profile against the last window of bars.

``assess`` is the computation (pure: profile + current frame in, verdict out); ``run_check``
wires it to the registry (champion, its profile, spec, evaluation and ONNX model), the
offline store (the current window: each symbol's last ``drift.window_bars`` feature rows),
the warehouse (``drift_checks`` + ``drift_features``, keyed by the window's start and end,
rewritten for the same window) and the alert de-duplication.

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

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import DriftSettings, Settings
from signalops.drift.stats import column_drift
from signalops.evaluation import metrics as ml

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
# a statistic -> the drift_features column of its null critical value
CRITICAL_COLUMNS = {
    "psi": "psi_critical",
    "ks_statistic": "ks_critical",
    "wasserstein": "wasserstein_critical",
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
    window_bars: int = 0
    calibrated: bool = False
    severity: str = "none"
    share_drifted: float = 0.0
    drifted_features: list[str] = field(default_factory=list)
    drifted_count_critical: int | None = None
    top_features: list[dict[str, Any]] = field(default_factory=list)
    prediction_psi: float | None = None
    prediction_psi_critical: float | None = None
    accuracy: float | None = None
    holdout_accuracy: float | None = None
    accuracy_drop: float | None = None
    accuracy_p_value: float | None = None
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
            f"{self.signal} v{self.model_version}, {self.window_start} .. {self.window_end} "
            f"({self.rows} rows): severity {self.severity.upper()}"
            f"{'' if self.calibrated else ' (uncalibrated profile)'}; "
            f"{len(self.drifted_features)}/{len(self.features)} features drifted "
            f"({self.share_drifted:.0%}), prediction PSI {pred}; top: {top or 'none'}; "
            f"reasons: {'; '.join(self.reasons) or 'none'}"
        )


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


def null_alarm_rate(
    profile: dict[str, Any],
    reference: pd.DataFrame,
    names: list[str],
    cfg: DriftSettings,
    rows: int,
    draws: int = 200,
    seed: int = 0,
    scores: np.ndarray | None = None,
    holdout: dict[str, float] | None = None,
    label: str | None = None,
) -> float:
    """Share of windows of ``rows`` contiguous reference rows (in ``ts``, ``symbol`` order)
    that ``assess`` calls medium or high: the false-alarm rate the calibration bounds.

    ``scores`` (aligned with ``reference``) adds prediction drift; ``label`` (a column of
    ``reference``) with ``holdout`` adds label drift on the rows where it is known.
    """
    if not 0 < rows <= len(reference):
        raise ValueError(f"windows of {rows} rows do not fit {len(reference)} reference rows")
    order = np.arange(len(reference))
    if "ts" in reference and not reference["ts"].is_monotonic_increasing:
        keys = ["ts", "symbol"] if "symbol" in reference else ["ts"]
        order = np.asarray(reference.reset_index(drop=True).sort_values(keys, kind="stable").index)
    frame = reference.iloc[order].reset_index(drop=True)
    ordered = None if scores is None else np.asarray(scores)[order]
    starts = np.random.default_rng(seed).integers(0, len(frame) - rows + 1, draws)
    alarms = 0
    for first in starts:
        window = frame.iloc[first : first + rows]
        window_scores = None if ordered is None else ordered[first : first + rows]
        outcomes = None
        if label is not None and window_scores is not None:
            known = window[label].notna().to_numpy()
            outcomes = (window[label].to_numpy(np.float64)[known], window_scores[known])
        verdict = assess(profile, window, names, cfg, window_scores, outcomes, holdout)
        alarms += SEVERITIES.index(verdict["severity"]) >= SEVERITIES.index("medium")
    return alarms / draws


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


def read_window(
    settings: Settings, spec: dict[str, Any], end: datetime, window_bars: int, columns: list[str]
) -> pd.DataFrame:
    """Each symbol's last ``window_bars`` feature rows before ``end`` (rows missing a
    feature dropped), in (ts, symbol) order: the store is read over the calendar span that
    surely holds that many bars, ``[end - market_calendar.span_for(window_bars), end)``."""
    from signalops.features.offline_store import OfflineStore

    names = list(spec["names"])
    start = end - settings.market.market_calendar.span_for(window_bars)
    frame = OfflineStore(settings.lake_dir).read(
        spec["feature_set_version"], start=start, end=end, columns=columns
    )
    frame = frame.dropna(subset=names)
    frame = frame.sort_values(["symbol", "ts"], kind="stable").groupby("symbol").tail(window_bars)
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def run_check(
    settings: Settings,
    end: datetime,
    window_bars: int | None = None,
    signal: str | None = None,
) -> DriftCheck:
    """Check each symbol's last ``window_bars`` bars before ``end`` against the champion;
    persist it; decide on alerting."""
    from signalops.features.definitions import LABEL_UP
    from signalops.onnx_model import load_session, predict_onnx

    cfg = settings.drift
    signal = signal or settings.signal_name
    bars = int(window_bars or cfg.window_bars)
    start = end - settings.market.market_calendar.span_for(bars)
    work = settings.state_dir / "drift" / "champion"
    champion = load_champion(settings, signal, work)
    if champion is None:
        return DriftCheck(
            signal,
            "",
            start.isoformat(),
            end.isoformat(),
            0,
            "skipped",
            "no champion registered yet",
            window_bars=bars,
        )
    names = list(champion.spec["names"])
    current = read_window(settings, champion.spec, end, bars, [*names, LABEL_UP])
    if len(current):  # the window starts at its first bar, not at the span read
        start = pd.Timestamp(current["ts"].min()).to_pydatetime()
    window = (start.isoformat(), end.isoformat())
    if len(current) < cfg.min_rows:
        return DriftCheck(
            signal,
            champion.version,
            *window,
            len(current),
            "skipped",
            f"only {len(current)} feature rows in the last {bars} bars of each symbol before "
            f"{window[1]} (drift.min_rows is {cfg.min_rows}): too few to judge, no verdict",
            window_bars=bars,
        )
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
        window_bars=bars,
        holdout_accuracy=champion.holdout.get("accuracy"),
        holdout_brier=champion.holdout.get("brier"),
        **verdict,
    )
    check.alert = persist(settings, check)
    log.info("drift: %s", check.summary())
    return check


def _key(check: DriftCheck | Mapping[str, Any]) -> dict[str, Any]:
    """The warehouse key of a check (or of its ``as_dict()``): windows of different lengths
    never share a row."""
    values = check if isinstance(check, Mapping) else vars(check)
    return {
        "signal_name": values["signal"],
        "model_version": values["model_version"],
        "window_start": pd.Timestamp(values["window_start"]).to_pydatetime(),
        "window_end": pd.Timestamp(values["window_end"]).to_pydatetime(),
    }


def persist(settings: Settings, check: DriftCheck, report_path: str | None = None) -> bool:
    """Write the check (replacing a previous check of the same window); return whether it
    should alert: medium or high, and no alert of at least this severity for this signal
    (any window length) ending within ``drift.realert_hours`` before this window's end (an
    ongoing drift alerts once, not hourly, and once for all the window lengths checked).
    A window counts as alerted only once the alert was delivered (``mark_alerted``): if the
    report, MLflow or Slack fails, the next check of the drift alerts again."""
    from signalops.warehouse import Warehouse
    from signalops.warehouse import drift as drift_rows

    cfg = settings.drift
    key = _key(check)
    end = key["window_end"]
    rank = SEVERITIES.index(check.severity)
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        with warehouse.begin() as conn:
            previous = drift_rows.previous_check(conn, key)
            recent = drift_rows.alerted_severities(
                conn, key, end - timedelta(hours=cfg.realert_hours), end
            )
            already = previous is not None and bool(previous.alerted)
            covered = any(SEVERITIES.index(severity) >= rank for severity in recent)
            alert = rank >= SEVERITIES.index("medium") and not covered and not already
            drift_rows.write_check(
                conn,
                {
                    **key,
                    "window_bars": check.window_bars or None,
                    "checked_at": datetime.now(UTC),
                    "rows": check.rows,
                    "calibrated": check.calibrated,
                    "severity": check.severity,
                    "share_drifted": check.share_drifted,
                    "prediction_psi": check.prediction_psi,
                    "accuracy": check.accuracy,
                    "holdout_accuracy": check.holdout_accuracy,
                    "matured_rows": check.matured_rows,
                    "reasons": check.reasons,
                    "recommendations": check.recommendations,
                    "alerted": already,
                    "report_path": report_path or (previous.report_path if previous else None),
                },
            )
            drift_rows.replace_features(
                conn,
                key,
                [
                    {
                        **key,
                        "feature": f["feature"],
                        "psi": f["psi"],
                        "ks_statistic": f["ks_statistic"],
                        "ks_p_value": f["ks_p_value"],
                        "wasserstein": f["wasserstein"],
                        **{c: f.get(c) for c in CRITICAL_COLUMNS.values()},
                        "severity": f["severity"],
                        "drifted": bool(f["drifted"]),
                    }
                    for f in check.features
                ],
            )
    return alert


def drift_alert(
    settings: Settings, summary: Mapping[str, Any], run_id: str | None = None
) -> tuple[Any, str, timedelta]:
    """The Slack alert of a check that must alert (``DriftCheck.as_dict()``, the DAG's
    summary), its dedup key (one per window: a retried alert task sends it once) and window
    (``drift.realert_hours``). It links to the signal's page, where the Evidently report
    is; the run's page is a field. Never a file path."""
    from signalops.alerts import Alert

    top = ", ".join(f"{f['feature']} {f['psi']:.2f}" for f in summary["top_features"][:5])
    fields = {
        "window": f"{summary['window_start']} .. {summary['window_end']}",
        "drifted": f"{len(summary['drifted_features'])} features ({summary['share_drifted']:.0%})",
    }
    if run_id:
        fields["run"] = settings.airflow_run_url("drift_monitor", run_id)
    alert = Alert(
        title=f"signalops: {summary['severity'].upper()} drift on {summary['signal']} "
        f"v{summary['model_version']}",
        text="\n".join(
            [
                *summary["reasons"],
                f"Top features (PSI): {top or 'none'}",
                "",
                *summary["recommendations"],
            ]
        ),
        severity="error" if summary["severity"] == "high" else "warning",
        fields=fields,
        link=settings.signal_page_url(summary["signal"]),
    )
    k = _key(summary)
    span = f"{k['window_start']:%Y%m%dT%H%M}-{k['window_end']:%Y%m%dT%H%M}"
    key = f"{k['signal_name']}:v{k['model_version']}:{span}"
    return alert, key, timedelta(hours=settings.drift.realert_hours)


def mark_alerted(settings: Settings, summary: Mapping[str, Any]) -> None:
    """The alert of a check (``DriftCheck.as_dict()``, as the DAG passes it on) was
    delivered: later windows within ``realert_hours`` are covered by it."""
    from signalops.warehouse import Warehouse
    from signalops.warehouse import drift as drift_rows

    key = _key(summary)
    with Warehouse(settings.warehouse_url) as warehouse, warehouse.begin() as conn:
        updated = drift_rows.mark_alerted(conn, key)
    if updated != 1:
        raise RuntimeError(f"no drift check to mark alerted for {key}")


def set_report_path(settings: Settings, check: DriftCheck, path: str) -> None:
    from signalops.warehouse import Warehouse
    from signalops.warehouse import drift as drift_rows

    with Warehouse(settings.warehouse_url) as warehouse, warehouse.begin() as conn:
        drift_rows.set_report_path(conn, _key(check), path)
