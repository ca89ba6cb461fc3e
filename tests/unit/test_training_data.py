"""Dataset assembly, leakage-safe splits, metrics and the gate (no MLflow, no Airflow)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from signalops.config import EvaluationSettings
from signalops.evaluation.gate import decide, paired_bootstrap
from signalops.evaluation.metrics import log_loss, ml_metrics, roc_auc, trading_metrics
from signalops.training.dataset import holdout_split, walk_forward

BAR = np.timedelta64(300, "s")
H = 12


def _ts(n_times: int, symbols: int = 3) -> np.ndarray:
    times = np.datetime64("2026-01-01T00:00") + np.arange(n_times) * BAR
    return np.repeat(times, symbols)


def test_holdout_is_newest_and_purged() -> None:
    ts = _ts(1000)
    purge = H * BAR
    split = holdout_split(ts, 0.2, purge)
    assert ts[split.valid].min() > ts[split.train].max()
    # no training label (which looks H bars ahead) reaches the holdout
    assert (ts[split.train] + purge < ts[split.valid].min()).all()
    assert len(np.unique(ts[split.valid])) == 200
    assert len(np.unique(ts[split.train])) == 800 - H


@pytest.mark.parametrize("folds", [2, 4, 6])
def test_walk_forward_folds_expand_and_never_leak(folds: int) -> None:
    ts = _ts(1200)
    purge = H * BAR
    splits = walk_forward(ts, folds, purge)
    assert len(splits) == folds
    sizes = [len(s.train) for s in splits]
    assert sizes == sorted(sizes) and sizes[0] > 0
    for s in splits:
        assert (ts[s.train] + purge < ts[s.valid].min()).all()
        assert len(np.intersect1d(s.train, s.valid)) == 0
    covered = np.concatenate([s.valid for s in splits])
    assert ts[covered].max() == ts.max()  # the last fold reaches the end of the dev period


def test_ml_metrics_against_hand_computed_values() -> None:
    y = np.array([0, 0, 1, 1], dtype=float)
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = ml_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9])))
    assert roc_auc(np.ones(3), np.array([0.1, 0.2, 0.3])) == 0.5
    assert log_loss(np.array([1.0]), np.array([1.0])) < 1e-12


def test_trading_metrics_perfect_and_costs() -> None:
    n = 24 * 12
    ts = pd.date_range("2026-01-01", periods=n, freq="5min", tz="UTC")
    rng = np.random.default_rng(0)
    ret = rng.normal(0, 0.01, n)
    frame = pd.DataFrame({"symbol": "A", "ts": ts, "label_return": ret})
    kw = {
        "horizon_bars": 12,
        "bars_per_year": 365 * 24 * 12,  # 5-minute bars around the clock
        "strategy": "long_short",
        "threshold": 0.5,
    }
    perfect = trading_metrics(frame, (ret > 0).astype(float), cost_bps=0.0, **kw)
    assert perfect["hit_rate"] == 1.0 and perfect["max_drawdown"] == 0.0
    assert perfect["cumulative_return"] == pytest.approx(np.expm1(np.abs(ret[::12]).sum()))
    assert perfect["trades"] == n / 12
    costly = trading_metrics(frame, (ret > 0).astype(float), cost_bps=50.0, **kw)
    assert costly["cumulative_return"] < perfect["cumulative_return"]
    flat = trading_metrics(frame, np.zeros(n), cost_bps=0.0, **{**kw, "strategy": "long_flat"})
    assert flat["cumulative_return"] == 0.0 and flat["turnover"] == 0.0


def test_paired_bootstrap_and_gate() -> None:
    rng = np.random.default_rng(1)
    ts = _ts(2000, symbols=2)
    y = rng.integers(0, 2, len(ts)).astype(float)
    good = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
    noise = np.clip(0.5 + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
    cfg = EvaluationSettings(bootstrap_samples=200)
    better = paired_bootstrap(y, good, noise, ts, "roc_auc", 200, 0.95, block=12)
    assert better["ci_low"] > 0
    worse = paired_bootstrap(y, noise, good, ts, "roc_auc", 200, 0.95, block=12)
    assert worse["ci_high"] < 0
    baseline = {"ml": ml_metrics(y, np.full(len(y), 0.5))}
    trading = {"sharpe": 1.0}

    def figures(p: np.ndarray) -> dict[str, dict[str, float]]:
        return {"ml": ml_metrics(y, p), "trading": trading}

    passed = decide(cfg, figures(good), baseline, better)
    assert passed.passed and passed.reasons == []
    failed = decide(cfg, figures(noise), baseline, worse)
    assert not failed.passed
    assert any(r.startswith("not_worse_than_champion") for r in failed.reasons)
    first_model = decide(cfg, figures(good), baseline, None)
    assert first_model.passed
    assert first_model.checks["not_worse_than_champion"]["status"] == "not applicable"


@pytest.mark.parametrize("metric", ["roc_auc", "log_loss", "accuracy", "brier"])
def test_weighted_bootstrap_metric_equals_metric_on_the_resampled_rows(metric: str) -> None:
    from signalops.evaluation.gate import _WeightedMetric

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500).astype(float)
    p = np.round(rng.random(500), 2)  # rounded: many tied scores, as shallow trees give
    fn = {
        "roc_auc": roc_auc,
        "log_loss": log_loss,
        "accuracy": lambda y, p: ml_metrics(y, p)["accuracy"],
        "brier": lambda y, p: ml_metrics(y, p)["brier"],
    }[metric]
    weighted = _WeightedMetric(metric, y, p)
    for _ in range(5):
        idx = rng.integers(0, 500, 500)
        w = np.bincount(idx, minlength=500).astype(float)
        assert weighted(w) == pytest.approx(fn(y[idx], p[idx]), abs=1e-12)


def test_column_profile_matches_numpy_quantiles_and_histogram() -> None:
    from signalops.drift.profile import column_profile

    rng = np.random.default_rng(5)
    for base in (rng.normal(size=10_001), np.round(rng.exponential(size=5000), 1)):
        values = np.concatenate([base, [np.nan, np.inf]])  # non-finite values are dropped
        prof = column_profile(values, bins=10, sample_size=100)
        finite = values[np.isfinite(values)]
        inner = np.unique(np.quantile(finite, np.linspace(0, 1, 11)[1:-1]))
        assert np.allclose(prof["edges"], inner, rtol=0, atol=1e-12)
        expected = np.histogram(finite, bins=np.concatenate(([-np.inf], inner, [np.inf])))[0]
        assert prof["counts"] == expected.tolist() and sum(prof["counts"]) == len(finite)
        assert prof["n"] == len(finite) and len(prof["sample"]) == 100
        assert prof["sample"] == sorted(prof["sample"])
