"""Drift statistics against a reference profile (see ``drift.profile``), vectorized numpy.

PSI (population stability index) on the reference's quantile bins::

    PSI = sum_i (c_i - r_i) * ln(c_i / r_i)

where ``r_i`` and ``c_i`` are the shares of the reference and current values in bin ``i``
(bins ``[e_i, e_i+1)`` between the reference quantiles, the outer two open-ended) and an
empty bin's share is floored at ``EMPTY_BIN_SHARE`` (1e-4), so one empty bin gives a large
but finite contribution instead of infinity.

KS: the two-sample Kolmogorov-Smirnov statistic ``D = max |F_ref - F_cur|`` over the merged
points, with the two-sided p-value of Smirnov's asymptotic distribution
(``scipy.stats.kstwo`` at ``n = round(n1 n2 / (n1 + n2))``, as ``scipy.stats.ks_2samp``
with ``method="asymp"``). At large n the p-value flags shifts too small to matter, so drift
rests on D (an effect size) and p together.

Wasserstein-1: ``integral |F_ref(x) - F_cur(x)| dx`` (as ``scipy.stats.wasserstein_distance``),
divided by the reference standard deviation so that features on different scales compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

EMPTY_BIN_SHARE = 1e-4


def bin_counts(values: np.ndarray, inner_edges: np.ndarray | list[float]) -> np.ndarray:
    """Counts of ``values`` in the bins ``(-inf, e_0), [e_0, e_1), ..., [e_k, inf)``."""
    values = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(np.asarray(inner_edges, dtype=np.float64), values, side="right")
    return np.bincount(idx, minlength=len(inner_edges) + 1)


def psi(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    r = np.asarray(reference_counts, dtype=np.float64)
    c = np.asarray(current_counts, dtype=np.float64)
    if r.sum() == 0 or c.sum() == 0:
        raise ValueError("PSI needs values on both sides")
    r = np.maximum(r / r.sum(), EMPTY_BIN_SHARE)
    c = np.maximum(c / c.sum(), EMPTY_BIN_SHARE)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_sorted(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(D, two-sided asymptotic p-value) for two sorted samples."""
    from scipy.stats import kstwo

    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        raise ValueError("KS needs values on both sides")
    merged = np.concatenate([a, b])
    diff = (
        np.searchsorted(a, merged, side="right") / n1
        - np.searchsorted(b, merged, side="right") / n2
    )
    d = float(np.max(np.abs(diff)))
    m, n = max(n1, n2), min(n1, n2)
    p = float(np.clip(kstwo.sf(d, np.round(m * n / (m + n))), 0.0, 1.0))
    return d, p


def wasserstein_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Wasserstein-1 distance between two sorted samples."""
    merged = np.sort(np.concatenate([a, b]), kind="mergesort")
    deltas = np.diff(merged)
    fa = np.searchsorted(a, merged[:-1], side="right") / len(a)
    fb = np.searchsorted(b, merged[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * deltas))


def column_drift(reference: dict[str, Any], current: np.ndarray) -> dict[str, float]:
    """PSI, KS and normalized Wasserstein of ``current`` against one profiled column."""
    values = np.asarray(current, dtype=np.float64)
    values = np.sort(values[np.isfinite(values)])
    sample = np.asarray(reference["sample"], dtype=np.float64)  # sorted when profiled
    counts = bin_counts(values, reference["edges"])
    d, p = ks_sorted(sample, values)
    scale = reference["std"] if reference["std"] > 0 else 1.0
    return {
        "psi": psi(np.asarray(reference["counts"]), counts),
        "ks_statistic": d,
        "ks_p_value": p,
        "wasserstein": wasserstein_sorted(sample, values) / scale,
        "current_mean": float(values.mean()) if len(values) else float("nan"),
        "reference_mean": float(reference["mean"]),
        "rows": len(values),
    }
