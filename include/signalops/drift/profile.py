"""Reference profiles: what the training features (and scores) looked like.

Per column: quantile bin edges with the reference counts in each bin (for PSI), summary
statistics, and a bounded, evenly-spaced sorted sample (for KS and Wasserstein without
keeping the whole training set). Stored as JSON next to the model version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROFILE_VERSION = 1


def column_profile(values: np.ndarray, bins: int, sample_size: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    values = np.sort(values[np.isfinite(values)])
    n = len(values)
    if n == 0:
        raise ValueError("cannot profile a column with no finite values")
    # The column is sorted once: quantiles (numpy's default "linear" method) by index,
    # bin counts by binary search (np.quantile and np.histogram would sort it again).
    position = np.linspace(0, 1, bins + 1)[1:-1] * (n - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n - 1)
    quantiles = values[low] + (values[high] - values[low]) * (position - low)
    inner = np.unique(quantiles)
    # Open outer bins: current data outside the training range still falls in a bin;
    # bins are [edge_i, edge_i+1), as np.histogram's.
    counts = np.diff(np.concatenate(([0], np.searchsorted(values, inner, side="left"), [n])))
    take = np.linspace(0, len(values) - 1, min(sample_size, len(values))).round().astype(int)
    return {
        "n": len(values),
        "edges": [float(e) for e in inner],  # inner edges; the outer ones are -inf and +inf
        "counts": counts.tolist(),
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values[0]),
        "max": float(values[-1]),
        "sample": values[take].tolist(),
    }


def build_profile(
    frame: pd.DataFrame,
    columns: list[str],
    scores: np.ndarray | None = None,
    bins: int = 10,
    sample_size: int = 2000,
) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "profile_version": PROFILE_VERSION,
        "rows": len(frame),
        "start": frame["ts"].min().isoformat() if "ts" in frame and len(frame) else None,
        "end": frame["ts"].max().isoformat() if "ts" in frame and len(frame) else None,
        "bins": bins,
        "features": {c: column_profile(frame[c].to_numpy(), bins, sample_size) for c in columns},
    }
    if scores is not None:
        profile["score"] = column_profile(scores, bins, sample_size)
    return profile


def save_profile(profile: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile))
    return path
