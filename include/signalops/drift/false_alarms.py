"""How often ``assess`` calls the reference itself drifted: the false-alarm rate.

``null_alarm_rate`` scores windows of contiguous reference rows (the champion's own
training data, in time order) the way the drift check scores live windows; the calibration
(the profile's null critical values) bounds the share it calls medium or high.
``bench/drift.py`` and the tests measure it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from signalops.config import DriftSettings
from signalops.drift.check import SEVERITIES
from signalops.drift.severity import assess


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
