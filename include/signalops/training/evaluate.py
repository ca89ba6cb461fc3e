"""The ``evaluate`` step of retrain: challenger vs champion vs naive baseline, the gate.

Scores the current champion on the same holdout rows (on its own feature set when it
reads another one), runs :func:`signalops.evaluation.report.evaluate` (ML and trading
metrics, paired bootstrap, the gate's rules), decides the action (register as challenger,
as champion when first, or reject) and writes the report (``evaluation.json``/``.md``),
logged to the MLflow run with ``describe``'s artifacts.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import Settings
from signalops.errors import BadInputError
from signalops.files import atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.dataset import Dataset, Split
from signalops.training.rundir import (
    HOLDOUT_SCORES,
    TRAIN_JSON,
    StepResult,
    load_dataset,
    load_split,
    read_request,
    read_state,
    save_state,
)

log = logging.getLogger(__name__)


def _champion_scores(
    settings: Settings, run_dir: Path, dataset: Dataset, holdout: pd.DataFrame, split: Split
) -> tuple[Any, np.ndarray | None, str | None]:
    """The current champion's P(up) on the holdout rows (its own feature set, via ONNX)."""
    from signalops.features.offline_store import OfflineStore
    from signalops.onnx_model import load_session, predict_onnx
    from signalops.registry import Registry

    registry = Registry(settings)
    champion = registry.by_alias(c.ALIAS_CHAMPION)
    if champion is None:
        return None, None, None
    folder = run_dir / "champion" / champion.version
    onnx_path = registry.download_file(champion.version, c.ONNX_MODEL, folder)
    spec = json.loads(registry.download_file(champion.version, c.FEATURE_SPEC, folder).read_text())
    names = spec["names"]
    if (
        spec["feature_set_version"] == dataset.feature_set_version
        and names == dataset.feature_names
    ):
        x = dataset.x[split.valid]
        note = None
    else:
        # The champion reads another feature set: score it on its own features, same rows.
        start, end = holdout["ts"].min(), holdout["ts"].max() + pd.Timedelta(dataset.bar)
        other = OfflineStore(settings.lake_dir).read(
            spec["feature_set_version"], sorted(holdout["symbol"].unique()), start, end
        )
        joined = holdout[["symbol", "ts"]].merge(
            other[["symbol", "ts", *names]], on=["symbol", "ts"], how="left"
        )
        if joined[names].isna().all(axis=1).any():
            missing = int(joined[names].isna().all(axis=1).sum())
            raise BadInputError(
                f"champion v{champion.version} uses feature set {spec['feature_set_version']}, "
                f"which the offline store lacks for {missing} holdout rows: backfill it first"
            )
        x = joined[names].to_numpy(dtype=np.float32)
        note = f"champion scored on its own feature set {spec['feature_set_version']}"
    p = predict_onnx(load_session(onnx_path), x)
    return champion, p, note


def evaluate(settings: Settings, run_dir: Path) -> StepResult:
    """Challenger vs champion vs naive baseline on the holdout; the gate's decision; the
    report (evaluation.json/.md), logged to the MLflow run with ``describe``'s artifacts."""
    from signalops.evaluation.report import (
        Scored,
        annualization_of,
        baseline_probability,
        markdown,
    )
    from signalops.evaluation.report import evaluate as evaluate_models
    from signalops.registry import Registry

    cfg = settings.evaluation
    run_id = read_state(run_dir)["mlflow_run_id"]
    dataset, split = load_dataset(run_dir), load_split(run_dir)
    scores = pd.read_parquet(run_dir / HOLDOUT_SCORES)
    train_y = dataset.y[split.train]
    p_base = baseline_probability(train_y)
    champion, p_champion, note = _champion_scores(settings, run_dir, dataset, scores, split)
    # Bars per year from the whole dataset (not just the holdout): a longer span gives a
    # steadier count of the bars the market really fills (weekends, holidays, FX hours).
    annual = annualization_of(
        dataset.frame["ts"], dataset.frame["symbol"], settings.market.market_calendar
    )
    report = evaluate_models(
        cfg,
        scores,
        dataset.horizon_bars,
        annual,
        Scored("challenger", scores["p_onnx"].to_numpy()),
        Scored("baseline", np.full(len(scores), p_base)),
        Scored("champion", p_champion, champion.version) if p_champion is not None else None,
    )
    decision = report["decision"]
    if not decision["passed"]:
        action = "rejected"
    elif champion is None and cfg.first_model_becomes_champion:
        action = c.ALIAS_CHAMPION
    else:
        action = c.ALIAS_CHALLENGER
    decision["action"] = action
    report["baseline_probability"] = p_base
    report["champion_note"] = note
    report["training"] = json.loads((run_dir / TRAIN_JSON).read_text())
    report["parity"] = json.loads((run_dir / c.PARITY_JSON).read_text())
    report["data_snapshot"] = dataset.snapshot_hash
    report["feature_set_version"] = dataset.feature_set_version

    importance = json.loads((run_dir / c.SHAP_JSON).read_text())
    report["shap_top"] = dict(list(importance.items())[:10])

    title = f"{settings.signal_name} challenger (run {read_request(run_dir).run_key})"
    text = markdown(report, title)
    atomic_write_bytes(
        run_dir / c.EVALUATION_JSON, json.dumps(report, indent=2, default=str).encode()
    )
    atomic_write_bytes(run_dir / c.EVALUATION_MD, text.encode())

    registry = Registry(settings)
    metrics: dict[str, float] = {}
    for role, values in report["models"].items():
        prefix = "holdout" if role == "challenger" else role
        for group in ("ml", "trading"):
            metrics.update({f"{prefix}_{k}": v for k, v in values[group].items()})
    if report["comparison"]:
        metrics.update({f"vs_champion_{k}": v for k, v in report["comparison"].items()})
    registry.log_metrics(run_id, metrics)
    registry.set_tags(
        run_id,
        {
            c.TAG_GATE: "passed" if decision["passed"] else "rejected",
            c.TAG_GATE_REASONS: "; ".join(decision["reasons"]) or "-",
            "mlflow.note.content": text,
        },
    )
    for name in (c.EVALUATION_JSON, c.EVALUATION_MD, c.SHAP_JSON, c.SHAP_PLOT):
        registry.log_artifact(run_id, run_dir / name, "evaluation")
    save_state(run_dir, action=action, passed=decision["passed"])
    challenger_ml = report["models"]["challenger"]["ml"]
    summary = (
        f"evaluation: challenger {cfg.primary_metric} {challenger_ml[cfg.primary_metric]:.4f}, "
        f"gate {'passed' if decision['passed'] else 'REJECTED'} -> {action}"
        + (f" ({'; '.join(decision['reasons'])})" if decision["reasons"] else "")
        + f"; report {run_dir / c.EVALUATION_MD}"
    )
    log.info("evaluation report\n%s", text)
    return StepResult(
        str(run_dir),
        run_id,
        summary,
        {"passed": decision["passed"], "action": action, "reasons": decision["reasons"]},
    )
