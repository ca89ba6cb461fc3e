"""Drift statistics against independent references (scipy, a textbook PSI loop), the
severity verdict on known shifts, and its calibration: windows drawn from the reference
period itself (synthetic 5-minute bars, real GOOG daily bars) are rarely called medium or
high, while real and injected regime changes are called high."""

from __future__ import annotations

import itertools
import logging
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from signalops.config import DriftSettings, Settings
from signalops.data.sources import source_from_settings
from signalops.drift.check import DriftCheck
from signalops.drift.false_alarms import null_alarm_rate
from signalops.drift.profile import _Blocks, _column_null, build_profile, column_profile
from signalops.drift.records import mark_alerted, persist, set_report_path
from signalops.drift.severity import assess
from signalops.drift.stats import (
    EMPTY_BIN_SHARE,
    bin_counts,
    column_drift,
    ks_sorted,
    psi,
    wasserstein_sorted,
)
from signalops.features.compute import compute_features
from signalops.features.definitions import LABEL_UP, get_feature_set
from tests.real_data import real_bars

RNG = np.random.default_rng(20261127)
CFG = Settings().drift  # 5-minute bars: window 288 bars, min_rows 200, min_outcomes 100
DAILY = Settings(market={"bar_minutes": 1440})  # window 63 bars, min_rows 40, min_outcomes 40
MAX_FALSE_ALARMS = 0.05
DRAWS = 200  # null windows per size


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
    cfg = CFG.model_copy(update={"method": "ks"})
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
    verdict = assess(profile, current, list(current.columns), CFG)
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
    cfg = CFG
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


# ---------------------------------------------------------------------------------------
# calibration: the null critical values


def _ordered(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Feature rows with every feature, in time order (ts, then symbol)."""
    frame = frame.dropna(subset=names)
    return frame.sort_values(["ts", "symbol"], kind="stable").reset_index(drop=True)


def _model(frame: pd.DataFrame, columns: tuple[str, str]) -> np.ndarray:
    """A fixed model: P(up) from two standardized features, squashed."""
    z = sum((frame[c] - frame[c].mean()) / frame[c].std() for c in columns)
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def _accuracy(frame: pd.DataFrame, scores: np.ndarray) -> float:
    known = frame[LABEL_UP].notna().to_numpy()
    return float(np.mean((scores[known] > 0.5) == (frame[LABEL_UP].to_numpy()[known] == 1)))


def _alarm_rates(
    frame: pd.DataFrame, names: list[str], cfg: DriftSettings, sizes: tuple[int, ...], model: tuple
) -> dict[int, float]:
    """Share of windows of contiguous reference rows called medium or high, per size."""
    scores = _model(frame, model)
    labels = frame[LABEL_UP].to_numpy()
    profile = build_profile(frame, names, scores=scores, labels=labels)
    holdout = {"accuracy": _accuracy(frame, scores)}
    return {
        n: null_alarm_rate(
            profile,
            frame,
            names,
            cfg,
            n,
            DRAWS,
            seed=n,
            scores=scores,
            holdout=holdout,
            label=LABEL_UP,
        )
        for n in sizes
    }


SHIFT_AT = Settings().market.synthetic.origin + timedelta(days=30)


@pytest.fixture(scope="module")
def synthetic_features() -> tuple[pd.DataFrame, list[str]]:
    """The default synthetic market (five symbols, 5-minute bars, a new regime every three
    days) with its shift injected after 30 days: 32 days of v1 features."""
    settings = Settings(market={"synthetic": {"shift_at": SHIFT_AT}})
    origin = settings.market.synthetic.origin
    bars = source_from_settings(settings).fetch(origin, SHIFT_AT + timedelta(days=2))
    feature_set = get_feature_set(settings.features.feature_set_version)
    features = compute_features(bars, feature_set, settings.features.horizon_bars)
    return _ordered(features, feature_set.names), feature_set.names


@pytest.fixture(scope="module")
def goog_features() -> tuple[pd.DataFrame, list[str]]:
    """GOOG daily bars 2004-08 .. 2013-03 (the backtesting package's test data): d1."""
    bars = real_bars("GOOG.csv")  # through the project's own CSV source
    feature_set = get_feature_set(DAILY.features.feature_set_version)
    features = compute_features(bars, feature_set, DAILY.features.horizon_bars)
    return _ordered(features, feature_set.names), feature_set.names


def test_block_statistics_are_the_checks_own() -> None:
    """The null's statistics of a block, from its histogram: PSI exactly the check's; KS D
    and Wasserstein lower bounds within 0.01 (heavy tails, ties, strong autocorrelation)."""
    from scipy.signal import lfilter

    n = 60_000  # a lattice of 15-row cells: blocks of 20 to 57 rows gathered, longer ones not
    columns = {
        "t3": RNG.standard_t(3, n),
        "ties": RNG.integers(0, 20, n).astype(float),
        "ar": lfilter([1.0], [1.0, -0.95], RNG.normal(size=n)),
    }
    blocks = _Blocks.draw(n, 3, np.random.default_rng(1))
    assert any(blocks.lattice) and not all(blocks.lattice)
    for name, values in columns.items():
        column = column_profile(values, 10, 2000)
        null = _column_null(values, column, blocks)
        for i, (size, starts, lattice) in enumerate(
            zip(blocks.sizes, blocks.starts, blocks.lattice, strict=True)
        ):
            for j, start in enumerate(starts):
                first = start * blocks.step if lattice else start
                exact = column_drift(column, values[first : first + size])
                assert null[0, i, j] == pytest.approx(exact["psi"], rel=1e-9, abs=1e-12)
                for k, stat in ((1, "ks_statistic"), (2, "wasserstein")):
                    assert exact[stat] - 0.01 <= null[k, i, j] <= exact[stat] + 1e-9, (name, size)


def test_windows_of_the_synthetic_training_period_are_rarely_alarms(
    synthetic_features: tuple[pd.DataFrame, list[str]],
) -> None:
    """Contiguous windows of the reference period (all symbols, regimes and all), from the
    smallest window judged to a third of the reference: medium or high at most 5 % of the
    time (features, the fixed model's score PSI and its accuracy on matured labels); about
    1.5 % measured over 600 draws."""
    frame, names = synthetic_features
    reference = frame[frame["ts"] < SHIFT_AT].reset_index(drop=True)
    sizes = (CFG.min_rows, CFG.window_bars * 5, 7200)
    rates = _alarm_rates(reference, names, CFG, sizes, ("momentum_24", "rsi_14"))
    print(f"synthetic 5-minute, {len(reference)} reference rows: false alarms by rows {rates}")
    assert all(rate <= MAX_FALSE_ALARMS for rate in rates.values()), rates


def test_windows_of_googs_own_decade_are_rarely_alarms(
    goog_features: tuple[pd.DataFrame, list[str]],
) -> None:
    """GOOG's daily d1 features 2005-2013 as the reference (2008 included, as a ten-year
    training window would have it); windows from a quarter of the minimum to two years."""
    frame, names = goog_features
    cfg = DAILY.drift
    sizes = (cfg.min_rows, cfg.window_bars, 126, 252, 504)
    rates = _alarm_rates(frame, names, cfg, sizes, ("ret_z_20", "rsi_14"))
    print(f"GOOG daily, {len(frame)} reference rows: false alarms by rows {rates}")
    assert all(rate <= MAX_FALSE_ALARMS for rate in rates.values()), rates


@pytest.mark.parametrize("method", ["psi", "ks", "wasserstein"])
def test_goog_in_late_2008_is_a_high_drift_from_2004_2007(
    goog_features: tuple[pd.DataFrame, list[str]], method: str
) -> None:
    frame, names = goog_features
    cfg = DAILY.drift.model_copy(update={"method": method})
    profile = build_profile(frame[frame["ts"] < "2008-01-01"], names)
    crash = frame[(frame["ts"] >= "2008-09-01") & (frame["ts"] < "2009-01-01")]
    verdict = assess(profile, crash, names, cfg)
    print(f"GOOG 2008-09..12 ({len(crash)} rows) vs 2005-2007, {method}: {verdict['reasons']}")
    assert verdict["severity"] == "high", verdict["reasons"]
    assert verdict["share_drifted"] >= cfg.share_high
    assert len(verdict["drifted_features"]) > verdict["drifted_count_critical"]
    calm = frame[(frame["ts"] >= "2007-09-01") & (frame["ts"] < "2008-01-01")]
    assert assess(profile, calm, names, cfg)["severity"] in ("none", "low")


def test_the_injected_synthetic_shift_is_high(
    synthetic_features: tuple[pd.DataFrame, list[str]],
) -> None:
    frame, names = synthetic_features
    profile = build_profile(frame[frame["ts"] < SHIFT_AT], names)
    for start in (SHIFT_AT + timedelta(hours=6), SHIFT_AT + timedelta(days=1)):
        bars = frame[frame["ts"] >= start].groupby("symbol").head(CFG.window_bars)
        verdict = assess(profile, bars, names, CFG)
        assert verdict["severity"] == "high", verdict["reasons"]
        assert verdict["share_drifted"] >= CFG.share_high
    before = frame[frame["ts"] < SHIFT_AT].groupby("symbol").tail(CFG.window_bars)
    assert assess(profile, before, names, CFG)["severity"] in ("none", "low")


def test_an_uncalibrated_profile_falls_back_to_the_thresholds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A version-1 profile (no critical values) still works, by the fixed thresholds (logged);
    on a small window of undrifted rows those call noise drift, the calibrated ones do not."""
    profile, current = _frames(20, 0, 0.0)
    old = {k: v for k, v in profile.items() if k != "null"} | {"profile_version": 1}
    small = current.iloc[:60]
    with caplog.at_level(logging.WARNING, logger="signalops.drift.severity"):
        fallback = assess(old, small, list(current.columns), CFG)
    assert "no null critical values" in caplog.text
    assert not fallback["calibrated"] and fallback["severity"] in ("medium", "high")
    calibrated = assess(profile, small, list(current.columns), CFG)
    assert calibrated["calibrated"] and calibrated["severity"] in ("none", "low")
    assert fallback["features"][0]["psi_critical"] is None
    assert calibrated["features"][0]["psi_critical"] > CFG.psi_moderate  # 60 rows: noisy


def test_windows_that_end_together_keep_their_own_rows(tmp_path: Path) -> None:
    """drift_checks / drift_features are keyed by the window's start and end: a long and a
    short window ending together are two checks, each with its report; one alert for both."""
    import sqlalchemy as sa

    from signalops.warehouse import drift_checks_table, drift_features_table

    settings = Settings(state_dir=tmp_path)
    end = "2026-03-01T00:00:00+00:00"
    feature = {
        "feature": "f0",
        "psi": 0.5,
        "ks_statistic": 0.3,
        "ks_p_value": 1e-6,
        "wasserstein": 0.4,
        "severity": "significant",
        "drifted": True,
    }
    quarter, year = (
        DriftCheck("s", "1", start, end, 60, "checked", window_bars=bars, severity="high")
        for start, bars in (("2025-12-01T00:00:00+00:00", 63), ("2025-03-01T00:00:00+00:00", 252))
    )
    for check in (quarter, year):
        check.features = [feature]
    assert persist(settings, quarter)
    assert persist(settings, year)  # the quarter's alert is not delivered yet: no cover
    mark_alerted(settings, quarter.as_dict())  # the DAG's alert task, once Slack took it
    assert not persist(settings, year)  # one ongoing drift
    set_report_path(settings, quarter, "quarter.html")
    set_report_path(settings, year, "year.html")
    assert not persist(settings, quarter)  # the same window again: rewritten, not re-alerted
    engine = sa.create_engine(settings.warehouse_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(drift_checks_table)).fetchall()
        features = conn.execute(sa.select(drift_features_table)).fetchall()
    engine.dispose()
    assert sorted((r.window_bars, r.report_path, r.alerted) for r in rows) == [
        (63, "quarter.html", True),
        (252, "year.html", False),
    ]
    assert len(features) == 2


def test_drift_tables_of_an_older_schema_are_rebuilt(tmp_path: Path) -> None:
    """A warehouse from before window-keyed checks: its drift tables are created anew."""
    import sqlalchemy as sa

    from signalops.warehouse import Warehouse, drift_checks_table

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE drift_checks (signal_name TEXT, model_version TEXT, "
                "window_end TEXT, severity TEXT, PRIMARY KEY (signal_name, model_version, "
                "window_end))"
            )
        )
        conn.execute(sa.text("INSERT INTO drift_checks VALUES ('s', '1', '2026-01-01', 'high')"))
    engine.dispose()
    with Warehouse(url) as warehouse:
        warehouse.create_all()
        warehouse.create_all()  # idempotent once upgraded
        inspector = sa.inspect(warehouse.engine)
        assert {c["name"] for c in inspector.get_columns("drift_checks")} == set(
            drift_checks_table.c.keys()
        )
        key = inspector.get_pk_constraint("drift_checks")["constrained_columns"]
        assert "window_start" in key and "window_end" in key
        assert inspector.has_table("bars")  # the rest is created as before
