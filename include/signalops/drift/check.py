"""A drift check's result (``DriftCheck``) and the vocabulary it is written in.

``SEVERITIES`` in rising order (the exporter's gauge is the index), what each one
recommends (``RECOMMENDATIONS``) and the ``drift_features`` column of each statistic's null
critical value (``CRITICAL_COLUMNS``). ``signalops.drift.severity.assess`` fills a check;
``signalops.drift.monitor.run_check`` makes one; ``signalops.drift.records`` writes it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
