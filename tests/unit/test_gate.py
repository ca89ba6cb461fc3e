"""The promotion gate: each rule on tiny inputs, the champion test, the report, annualization."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from signalops.calendar import MarketCalendar
from signalops.config import EvaluationSettings
from signalops.evaluation.gate import RULES, decide, paired_bootstrap
from signalops.evaluation.metrics import ml_metrics, trading_metrics
from signalops.evaluation.report import (
    Annualization,
    Scored,
    annualization_of,
    baseline_probability,
    evaluate,
    markdown,
    rules_table,
)

DAGS_DOC = Path(__file__).resolve().parents[2] / "docs" / "dags.md"  # the promotion gate
Y = np.array([0, 0, 0, 1, 1, 1, 1, 0], dtype=float)
GOOD = np.array([0.4, 0.45, 0.4, 0.6, 0.55, 0.6, 0.6, 0.45])  # ranks perfectly, mild
Figures = dict[str, dict[str, float]]


def _figures(
    roc_auc: float = 0.6, log_loss: float = 0.65, sharpe: float = 1.0, **ml: float
) -> Figures:
    return {
        "ml": {"roc_auc": roc_auc, "log_loss": log_loss, "accuracy": 0.55, "brier": 0.24, **ml},
        "trading": {"sharpe": sharpe},
    }


BASELINE: Figures = {
    "ml": {"roc_auc": 0.5, "log_loss": float(np.log(2)), "accuracy": 0.5, "brier": 0.25}
}


def _comparison(difference: float, low: float, high: float) -> dict[str, float]:
    n = {"rows": 480.0, "timestamps": 40.0, "samples": 500.0}
    return {"difference": difference, "ci_low": low, "ci_high": high, **n}


def _check(
    name: str,
    challenger: Figures,
    baseline: Figures = BASELINE,
    comparison: dict[str, float] | None = None,
    **settings: object,
) -> dict:
    decision = decide(EvaluationSettings(**settings), challenger, baseline, comparison)
    check = decision.checks[name]
    assert decision.passed == all(c["passed"] is not False for c in decision.checks.values())
    assert (check["status"] == "fail") == any(r.startswith(f"{name}:") for r in decision.reasons)
    return check


@pytest.mark.parametrize(
    ("p", "primary", "status", "why"),
    [
        (GOOD, "roc_auc", "pass", "(better), log_loss"),
        (1 - GOOD, "roc_auc", "fail", "(not better)"),
        # Ranks well (AUC 0.75) but two confident misses: worse than the baseline on log loss.
        (np.array([0.01, 0.01, 0.01, 0.99, 0.99, 0.99, 0.01, 0.99]), "roc_auc", "fail", "(worse)"),
        (GOOD, "log_loss", "pass", "(better)"),
        (np.full(8, 0.5), "accuracy", "fail", "(not better)"),  # the baseline itself
    ],
)
def test_beats_baseline_on_primary_metric_and_log_loss(
    p: np.ndarray, primary: str, status: str, why: str
) -> None:
    base = baseline_probability(np.array([0, 1, 1, 0], dtype=float))  # 0.5
    baseline = {"ml": ml_metrics(Y, np.full(len(Y), base))}
    challenger = {"ml": ml_metrics(Y, p), "trading": {"sharpe": 1.0}}
    check = _check("beats_baseline", challenger, baseline, primary_metric=primary)
    assert check["status"] == status and why in check["detail"]
    assert check["numbers"][f"baseline_{primary}"] == baseline["ml"][primary]


@pytest.mark.parametrize(
    ("sharpe", "min_sharpe", "status"),
    [(0.8, 0.0, "pass"), (-2.44, 0.0, "fail"), (0.0, 0.0, "fail"), (0.8, 1.0, "fail")],
)
def test_net_sharpe_must_exceed_the_minimum(sharpe: float, min_sharpe: float, status: str) -> None:
    check = _check("net_sharpe", _figures(sharpe=sharpe), min_sharpe=min_sharpe)
    assert check["status"] == status
    assert check["setting"] == "evaluation.min_sharpe" and check["threshold"] == min_sharpe


@pytest.mark.parametrize(
    ("name", "figures", "status"),
    [
        ("floor_roc_auc", _figures(roc_auc=0.52), "pass"),
        ("floor_roc_auc", _figures(roc_auc=0.5199), "fail"),
        ("ceiling_log_loss", _figures(log_loss=0.70), "pass"),
        ("ceiling_log_loss", _figures(log_loss=0.7001), "fail"),
    ],
)
def test_floors(name: str, figures: Figures, status: str) -> None:
    assert _check(name, figures)["status"] == status


@pytest.mark.parametrize(
    ("comparison", "margin", "status"),
    [
        (_comparison(+0.004, -0.036, +0.044), 0.01, "pass"),  # a gain with a wide CI
        (_comparison(+0.004, -0.036, +0.044), 0.0, "pass"),  # a gain, even with no margin
        (_comparison(-0.004, -0.044, +0.036), 0.01, "pass"),  # small holdout: not shown worse
        (_comparison(-0.003, -0.005, -0.001), 0.01, "pass"),  # surely worse, but immaterially
        (_comparison(-0.003, -0.005, -0.001), 0.0, "fail"),  # ... unless no loss is allowed
        (_comparison(-0.050, -0.080, -0.020), 0.01, "fail"),  # the whole CI below -margin
    ],
)
def test_champion_rule_is_a_non_inferiority_test(
    comparison: dict[str, float], margin: float, status: str
) -> None:
    check = _check(
        "not_worse_than_champion",
        _figures(),
        comparison=comparison,
        non_inferiority_margin=margin,
    )
    assert check["status"] == status
    detail = check["detail"]
    low, high = comparison["ci_low"], comparison["ci_high"]
    for text in (f"{comparison['difference']:+.4f}", f"[{low:+.4f}, {high:+.4f}]", "n = 480"):
        assert text in detail
    assert f"margin {margin:g}" in detail


def test_a_gain_with_a_wide_bootstrap_ci_passes_the_champion_rule() -> None:
    rng = np.random.default_rng(7)
    hours = np.datetime64("2026-01-01T00:00") + np.arange(60) * np.timedelta64(1, "h")
    ts = np.repeat(hours, 2)
    y = rng.integers(0, 2, len(ts)).astype(float)
    challenger = np.clip(0.5 + 0.15 * (y - 0.5) + rng.normal(0, 0.25, len(y)), 0.01, 0.99)
    # The champion: the same model blurred a little. 120 rows cannot tell them apart.
    blur = np.random.default_rng(2).normal(0, 0.05, len(y))
    champion = np.clip(challenger + blur, 0.01, 0.99)
    cfg = EvaluationSettings(bootstrap_samples=200)
    comparison = paired_bootstrap(y, challenger, champion, ts, "roc_auc", 200, 0.95, block=6)
    # A gain whose CI reaches below -margin: "lower CI end >= -tolerance" called it worse.
    assert comparison["difference"] > 0 and comparison["ci_low"] < -cfg.non_inferiority_margin
    decision = decide(cfg, _figures(), BASELINE, comparison)
    assert decision.checks["not_worse_than_champion"]["status"] == "pass"
    assert "a gain is never worse" in decision.checks["not_worse_than_champion"]["detail"]


def test_negative_net_sharpe_rejects_with_that_reason() -> None:
    # Right on direction by AUC, yet the backtest loses after costs: every call is wrong-way.
    ts = pd.date_range("2026-01-05", periods=40, freq="D", tz="UTC")
    ret = np.tile([0.001, -0.001], 20)
    frame = pd.DataFrame({"symbol": "EURUSD", "ts": ts, "label_return": ret})
    p = np.where(ret > 0, 0.45, 0.55)  # long before falls, short before rises
    trading = trading_metrics(frame, p, 1, 252.0, "long_short", 0.5, cost_bps=1.0)
    assert trading["sharpe"] < 0
    challenger = {"ml": _figures()["ml"], "trading": trading}
    decision = decide(EvaluationSettings(), challenger, BASELINE, None)
    assert not decision.passed
    assert [r.split(":")[0] for r in decision.reasons] == ["net_sharpe"]
    assert f"net Sharpe {trading['sharpe']:.2f}" in decision.reasons[0]


def test_every_rule_is_judged_for_the_first_model_too() -> None:
    decision = decide(EvaluationSettings(), _figures(), BASELINE, None)
    assert list(decision.checks) == [rule.name for rule in RULES]
    assert decision.passed and decision.reasons == []
    champion = decision.checks["not_worse_than_champion"]
    assert champion["status"] == "not applicable" and champion["passed"] is None


def test_rules_are_declared_once_and_documented() -> None:
    names = [rule.name for rule in RULES]
    assert len(set(names)) == len(names)
    fields = EvaluationSettings.model_fields
    for rule in RULES:
        assert rule.setting is None or rule.setting in fields, rule.setting
    assert rules_table() in DAGS_DOC.read_text(), "docs/dags.md's gate table differs from RULES"


def test_old_tolerance_setting_says_what_replaced_it() -> None:
    with pytest.raises(ValidationError, match="non_inferiority_margin"):
        EvaluationSettings.model_validate({"tolerance": 0.005})


def _weekday_sessions(start: str, end: str) -> pd.DatetimeIndex:
    """NYSE-like daily bars: weekdays minus the US federal holidays."""
    from pandas.tseries.holiday import USFederalHolidayCalendar
    from pandas.tseries.offsets import CustomBusinessDay

    days = pd.date_range(start, end, freq=CustomBusinessDay(calendar=USFederalHolidayCalendar()))
    return days.tz_localize("UTC")


def test_annualization_counts_the_bars_the_data_has() -> None:
    days = _weekday_sessions("2023-01-01", "2024-12-31")
    ts = pd.Series(np.tile(days, 2))
    symbols = pd.Series(np.repeat(["SPY", "QQQ"], len(days)))
    calendar = MarketCalendar("weekdays", timedelta(days=1))
    annual = annualization_of(ts, symbols, calendar)
    assert annual.source == "observed" and 248 < annual.bars_per_year < 256  # not 365
    short = annualization_of(ts[:10], symbols[:10], calendar)  # two weeks: too short to say
    assert short == Annualization(calendar.periods_per_year(), "calendar")

    # Sharpe scales with sqrt(bars_per_year / H): the figure is what annualizes it.
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {"symbol": "SPY", "ts": days, "label_return": rng.normal(0, 0.01, len(days))}
    )
    p = rng.random(len(days))
    args = (frame, p, 5)
    kw = {"strategy": "long_short", "threshold": 0.5, "cost_bps": 1.0}
    sharpe_252 = trading_metrics(*args, annual.bars_per_year, **kw)["sharpe"]
    sharpe_365 = trading_metrics(*args, 365.0, **kw)["sharpe"]
    assert sharpe_252 / sharpe_365 == pytest.approx(np.sqrt(annual.bars_per_year / 365.0))
    with pytest.raises(ValueError, match="bars_per_year must be a positive number"):
        trading_metrics(*args, 0.0, **kw)


def test_report_tables_every_rule_with_numbers_and_annualization() -> None:
    days = _weekday_sessions("2025-01-01", "2025-06-30")
    rng = np.random.default_rng(4)
    holdout = pd.DataFrame(
        {
            "symbol": np.repeat(["SPY", "QQQ"], len(days)),
            "ts": np.tile(days, 2),
            "label_return": rng.normal(0, 0.01, 2 * len(days)),
        }
    )
    holdout["label_up"] = (holdout["label_return"] > 0).astype(float)
    cfg = EvaluationSettings(bootstrap_samples=50)
    calendar = MarketCalendar("weekdays", timedelta(days=1))
    annual = annualization_of(holdout["ts"], holdout["symbol"], calendar)
    p = np.clip(0.5 + 2 * holdout["label_return"].to_numpy(), 0.01, 0.99)  # peeks: wins
    base = Scored("baseline", np.full(len(holdout), 0.5))
    report = evaluate(cfg, holdout, 5, annual, Scored("challenger", p), base, None)
    assert report["decision"]["passed"]
    assert report["annualization"]["source"] == "observed"
    assert report["annualization"]["periods_per_year"] == pytest.approx(annual.bars_per_year / 5)
    text = markdown(report, "test")
    assert "gate PASSED" in text and "bars per year (observed in the data)" in text
    for rule in RULES:
        assert f"| `{rule.name}` |" in text
    assert "| not applicable |" in text and "`evaluation.min_sharpe` = 0.0" in text

    champion = Scored("champion", p, "1")
    loser = Scored("challenger", 1 - p)
    rejected = evaluate(cfg, holdout, 5, annual, loser, base, champion)
    assert not rejected["decision"]["passed"]
    failed = {r.split(":")[0] for r in rejected["decision"]["reasons"]}
    assert failed == {
        "beats_baseline",
        "net_sharpe",
        "floor_roc_auc",
        "ceiling_log_loss",
        "not_worse_than_champion",
    }
    assert markdown(rejected, "test").count("**FAIL**") == len(RULES)


def test_baseline_margin_is_an_explicit_opt_out_never_the_default() -> None:
    """A challenger trailing the baseline fails by default; a user may allow a margin."""
    y = np.array([0, 1, 1, 0, 1, 0, 1, 1], dtype=float)
    p = np.full(len(y), 0.55)
    challenger = {"ml": ml_metrics(y, p), "trading": {"sharpe": 1.0}}
    base = {"ml": ml_metrics(y, np.full(len(y), 0.5)), "trading": {"sharpe": 0.0}}
    strict = decide(EvaluationSettings(min_roc_auc=0), challenger, base, None)
    assert strict.checks["beats_baseline"]["status"] == "fail"
    relaxed = decide(
        EvaluationSettings(min_roc_auc=0, baseline_margin=0.05), challenger, base, None
    )
    assert relaxed.checks["beats_baseline"]["status"] == "pass"
    assert "baseline_margin 0.05" in relaxed.checks["beats_baseline"]["detail"]
