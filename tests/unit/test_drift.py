"""Drift statistics against independent references (scipy, a textbook PSI loop) and the
severity verdict on known shifts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from signalops.config import DriftSettings
from signalops.drift.monitor import assess
from signalops.drift.profile import build_profile, column_profile
from signalops.drift.stats import (
    EMPTY_BIN_SHARE,
    bin_counts,
    column_drift,
    ks_sorted,
    psi,
    wasserstein_sorted,
)

RNG = np.random.default_rng(20261127)


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "ties"),
    [
        (2000, 250_000, 0.0, False),
        (2000, 3000, 0.3, False),
        (500, 700, 0.1, True),
        (50, 80, 1.0, False),
    ],
)
def test_ks_matches_scipy(n1: int, n2: int, shift: float, ties: bool) -> None:
    a = RNG.normal(size=n1)
    b = RNG.normal(shift, 1.0, size=n2)
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    d, p = ks_sorted(np.sort(a), np.sort(b))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == ref.statistic  # the same statistic, exactly
    assert abs(p - ref.pvalue) <= 1e-6


@pytest.mark.parametrize("shift", [0.0, 0.2, 2.0])
def test_wasserstein_matches_scipy(shift: float) -> None:
    a = RNG.gamma(2.0, size=1500)
    b = RNG.gamma(2.0, size=4000) + shift
    ours = wasserstein_sorted(np.sort(a), np.sort(b))
    assert ours == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


def _textbook_psi(reference: np.ndarray, current: np.ndarray, inner: list[float]) -> float:
    """PSI by hand: count each value into [e_i, e_i+1) with the outer bins open."""
    edges = [-math.inf, *inner, math.inf]
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        r = sum(1 for v in reference if lo <= v < hi) / len(reference)
        c = sum(1 for v in current if lo <= v < hi) / len(current)
        r, c = max(r, EMPTY_BIN_SHARE), max(c, EMPTY_BIN_SHARE)
        total += (c - r) * math.log(c / r)
    return total


@pytest.mark.parametrize("shift", [0.0, 0.3, 1.0, 5.0])
def test_psi_matches_a_textbook_computation_on_the_same_bins(shift: float) -> None:
    reference = RNG.normal(size=3000)
    current = RNG.normal(shift, 1.2, size=1000)
    profile = column_profile(reference, bins=10, sample_size=500)
    assert bin_counts(reference, profile["edges"]).tolist() == profile["counts"]
    ours = psi(np.asarray(profile["counts"]), bin_counts(current, profile["edges"]))
    assert ours == pytest.approx(_textbook_psi(reference, current, profile["edges"]), rel=1e-12)
    if shift == 5.0:  # most bins empty on one side: large, finite
        assert 5 < ours < 100


def test_identical_distributions_give_no_drift() -> None:
    reference = RNG.normal(size=20_000)
    profile = column_profile(reference, bins=10, sample_size=2000)
    same = column_drift(profile, RNG.normal(size=5000))
    assert same["psi"] < 0.01 and same["ks_statistic"] < 0.05 and same["wasserstein"] < 0.05


def test_ks_p_value_alone_flags_a_tiny_shift_at_large_n_but_the_verdict_does_not() -> None:
    reference = RNG.normal(size=200_000)
    profile = column_profile(reference, bins=10, sample_size=2000)
    tiny = column_drift(profile, RNG.normal(0.03, 1.0, size=200_000))
    cfg = DriftSettings(method="ks")
    frame = pd.DataFrame({"x": RNG.normal(0.03, 1.0, size=200_000)})
    verdict = assess({"features": {"x": profile}}, frame, ["x"], cfg)
    assert tiny["ks_statistic"] < cfg.ks_min_statistic
    assert verdict["drifted_features"] == [] and verdict["severity"] == "none"


def _frames(n_features: int, shifted: int, shift: float) -> tuple[dict, pd.DataFrame]:
    names = [f"f{i}" for i in range(n_features)]
    reference = pd.DataFrame(RNG.normal(size=(20_000, n_features)), columns=names)
    current = pd.DataFrame(RNG.normal(size=(3000, n_features)), columns=names)
    for name in names[:shifted]:
        current[name] = current[name] * 1.0 + shift
    return build_profile(reference, names), current


@pytest.mark.parametrize(
    ("shifted", "shift", "expected"),
    [(0, 0.0, "none"), (1, 1.0, "low"), (4, 1.0, "medium"), (12, 1.0, "high")],
)
def test_known_shifts_give_the_expected_severity(shifted: int, shift: float, expected: str) -> None:
    profile, current = _frames(20, shifted, shift)
    verdict = assess(profile, current, list(current.columns), DriftSettings())
    assert verdict["severity"] == expected, verdict["reasons"]
    assert len(verdict["drifted_features"]) == shifted
    assert verdict["share_drifted"] == shifted / 20
    if shifted:
        top = {f["feature"] for f in verdict["top_features"]}
        assert top <= set(current.columns[:shifted]) and len(top) == min(shifted, 10)
        assert verdict["reasons"] and verdict["recommendations"]


def test_prediction_drift_and_accuracy_drop_raise_the_severity() -> None:
    profile, current = _frames(5, 0, 0.0)
    scores_ref = RNG.beta(5, 5, size=20_000)
    profile["score"] = column_profile(scores_ref, 10, 2000)
    cfg = DriftSettings()
    moved = assess(profile, current, list(current.columns), cfg, scores=RNG.beta(8, 3, size=3000))
    assert moved["severity"] == "high" and moved["prediction_psi"] >= cfg.psi_significant
    labels = RNG.integers(0, 2, size=1000).astype(float)
    coin = RNG.uniform(size=1000)  # a model no better than chance now
    worse = assess(
        profile,
        current,
        list(current.columns),
        cfg,
        scores=RNG.beta(5, 5, size=3000),
        outcomes=(labels, coin),
        holdout={"accuracy": 0.66, "brier": 0.2},
    )
    assert worse["accuracy"] == pytest.approx(float(np.mean((coin > 0.5) == (labels == 1))))
    assert worse["accuracy_drop"] > 0.1 and worse["severity"] == "high"
    assert any("accuracy" in r for r in worse["reasons"])
    few = assess(
        profile,
        current,
        list(current.columns),
        cfg,
        outcomes=(labels[:50], coin[:50]),
        holdout={"accuracy": 0.66},
    )
    assert few["accuracy"] is None and few["matured_rows"] == 50  # too few to judge
