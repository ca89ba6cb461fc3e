"""The retrain path, one function per task of the ``retrain`` DAG.

plan -> assemble -> train (walk-forward CV + final fit) -> export (ONNX + parity gate) ->
evaluate (challenger vs champion vs naive baseline, the gate) -> register | reject.

Steps hand over files in one run directory (``<state>/retrain/<run key>/``) and return
small dicts (paths, ids, figures) for XCom. Each step can be retried: it rewrites its own
files and reuses the MLflow run and model version it already created. All MLflow access
goes through :mod:`signalops.registry`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import resource
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from signalops.alerts import Alert
from signalops.config import Settings, XGBoostParams
from signalops.errors import BadInputError
from signalops.files import atomic_write_arrow, atomic_write_bytes, atomic_write_table
from signalops.registry import contracts as c
from signalops.training.dataset import Dataset, InsufficientDataError, Split, assemble_dataset
from signalops.windows import parse_ts, resolve_window

log = logging.getLogger(__name__)

DATASET = "dataset.arrow"  # Arrow IPC (zstd): the run's exact training rows
DATASET_META = "dataset.json"
REQUEST = "request.json"
SPLIT = "split.npz"
TRAIN_JSON = "train.json"
HOLDOUT_SCORES = "holdout_scores.parquet"
STATE = "state.json"


class AlreadyTrained(Exception):
    """A registered version was trained on this exact data and settings (no ``force``)."""

    def __init__(self, version: str, key: str):
        self.version = version
        super().__init__(
            f"version {version} was already trained on this data snapshot and settings "
            f"(training key {key}); nothing new to learn. Trigger with force=true to retrain."
        )


@dataclass
class RetrainRequest:
    run_key: str
    start: datetime
    end: datetime
    symbols: list[str]
    feature_set_version: str
    params: XGBoostParams
    force: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "symbols": self.symbols,
            "feature_set_version": self.feature_set_version,
            "params": self.params.model_dump(),
            "force": self.force,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrainRequest:
        return cls(
            run_key=data["run_key"],
            start=parse_ts(data["start"], "start"),
            end=parse_ts(data["end"], "end"),
            symbols=list(data["symbols"]),
            feature_set_version=data["feature_set_version"],
            params=XGBoostParams.model_validate(data["params"]),
            force=bool(data["force"]),
        )


@dataclass
class StepResult:
    """What a step returns to XCom: references and a few figures, never data."""

    run_dir: str
    mlflow_run_id: str | None
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_directory(settings: Settings, run_key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_key).strip("._") or "run"
    return settings.state_dir / "retrain" / safe


# ---------------------------------------------------------------------------------------
# plan


def plan_request(settings: Settings, params: Mapping[str, Any], run_key: str) -> RetrainRequest:
    """The run's window, symbols, feature set and hyperparameters from params over config."""
    from signalops.features.definitions import get_feature_set
    from signalops.features.offline_store import OfflineStore

    version = params.get("feature_set_version") or settings.features.feature_set_version
    get_feature_set(version)  # unknown versions fail here, with the known ones listed
    symbols = list(params.get("symbols") or settings.market.symbols)
    unknown = sorted(set(symbols) - set(settings.market.symbols))
    if unknown:
        raise BadInputError(
            f"retrain params: unknown symbols {unknown}; "
            f"configured: {list(settings.market.symbols)}"
        )
    days = params.get("window_days") or settings.training.window_days
    if not isinstance(days, int) or days <= 0:
        raise BadInputError(f"retrain params: window_days must be a positive integer, got {days!r}")
    if params.get("end"):
        end = parse_ts(params["end"], "retrain params end")
    else:
        latest = OfflineStore(settings.lake_dir).latest(version, symbols)
        if latest.empty:  # a new deployment: the daily run comes before any features
            raise InsufficientDataError(
                0,
                settings.training.min_rows,
                f"the offline store ({version}, {symbols}; run market_data and features first)",
            )
        end = (pd.Timestamp(latest["ts"].max()) + settings.market.bar).to_pydatetime()
    start = params.get("start") or (end - timedelta(days=days)).isoformat()
    start_dt, end_dt = resolve_window(start, end, what="retrain window")
    overrides = params.get("hyperparameters") or {}
    if not isinstance(overrides, Mapping):
        raise BadInputError(f"retrain params: hyperparameters must be an object, got {overrides!r}")
    merged = {**settings.training.xgboost.model_dump(), **overrides}
    try:
        xgb_params = XGBoostParams.model_validate(merged)
    except ValueError as exc:
        raise BadInputError(f"retrain params: invalid hyperparameters: {exc}") from None
    return RetrainRequest(
        run_key=run_key,
        start=start_dt,
        end=end_dt,
        symbols=symbols,
        feature_set_version=version,
        params=xgb_params,
        force=bool(params.get("force", False)),
    )


def write_request(settings: Settings, request: RetrainRequest) -> Path:
    run_dir = run_directory(settings, request.run_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / REQUEST, json.dumps(request.as_dict(), indent=2).encode())
    return run_dir


def _request(run_dir: Path) -> RetrainRequest:
    return RetrainRequest.from_dict(json.loads((run_dir / REQUEST).read_text()))


def _state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(run_dir: Path, **updates: Any) -> dict[str, Any]:
    state = {**_state(run_dir), **updates}
    atomic_write_bytes(run_dir / STATE, json.dumps(state, indent=2).encode())
    return state


# ---------------------------------------------------------------------------------------
# assemble


def training_key(settings: Settings, dataset: Dataset, request: RetrainRequest) -> str:
    """Same data snapshot and same training settings: the same model (training is seeded)."""
    payload = {
        "snapshot": dataset.snapshot_hash,
        "feature_set": dataset.feature_set_version,
        "horizon": dataset.horizon_bars,
        "training": settings.training.model_dump(mode="json", exclude={"xgboost"}),
        "xgboost": request.params.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def assemble(settings: Settings, run_dir: Path) -> StepResult:
    """Point-in-time labeled rows -> ``dataset.arrow``; opens the run's MLflow run."""
    from signalops.registry import Registry, code_version

    request = _request(run_dir)
    dataset = assemble_dataset(
        settings, request.start, request.end, request.symbols, request.feature_set_version
    )
    key = training_key(settings, dataset, request)
    registry = Registry(settings)
    if not request.force:
        existing = registry.find_version(c.TAG_TRAINING_KEY, key)
        if existing is not None:
            raise AlreadyTrained(existing.version, key)

    # Features as float32 (what XGBoost and ONNX consume); Arrow IPC writes and reads several
    # times faster than Parquet, and every later task reads this file.
    frame32 = dataset.frame.astype(dict.fromkeys(dataset.feature_names, "float32"))
    atomic_write_arrow(run_dir / DATASET, pa.Table.from_pandas(frame32, preserve_index=False))
    del frame32
    meta = {
        "feature_names": dataset.feature_names,
        "feature_set_version": dataset.feature_set_version,
        "horizon_bars": dataset.horizon_bars,
        "bar_seconds": dataset.bar.total_seconds(),
        "snapshot_hash": dataset.snapshot_hash,
        "training_key": key,
    }
    atomic_write_bytes(run_dir / DATASET_META, json.dumps(meta, indent=2).encode())

    # A retried assemble reuses its MLflow run when it saw the same data.
    run_id = _state(run_dir).get("mlflow_run_id")
    if run_id is None or registry.run_tags(run_id).get(c.TAG_TRAINING_KEY) != key:
        run_id = registry.start_run(
            run_name=f"retrain {request.run_key}",
            tags={
                c.TAG_RUN_KEY: request.run_key,
                c.TAG_TRAINING_KEY: key,
                c.TAG_SNAPSHOT: dataset.snapshot_hash,
                c.TAG_FEATURE_SET: dataset.feature_set_version,
                c.TAG_CODE_VERSION: code_version(),
                "mlflow.note.content": f"signalops retrain, run {request.run_key}",
            },
        )
    _save_state(run_dir, mlflow_run_id=run_id, training_key=key)
    frame = dataset.frame
    registry.log_params(
        run_id,
        {
            "window_start": request.start.isoformat(),
            "window_end": request.end.isoformat(),
            "symbols": ",".join(request.symbols),
            "feature_set_version": dataset.feature_set_version,
            "n_features": len(dataset.feature_names),
            "horizon_bars": dataset.horizon_bars,
            "bar_minutes": int(dataset.bar.total_seconds() // 60),
            "rows": len(frame),
            "data_snapshot": dataset.snapshot_hash,
            "force": request.force,
            **{
                f"training.{k}": v
                for k, v in settings.training.model_dump(exclude={"xgboost"}).items()
            },
        },
    )
    registry.log_metrics(
        run_id, {"dataset_rows": len(frame), "dataset_up_share": float(frame["label_up"].mean())}
    )
    summary = (
        f"dataset: {len(frame)} labeled rows of {frame['symbol'].nunique()} symbols, "
        f"{frame['ts'].min()} .. {frame['ts'].max()}, feature set {dataset.feature_set_version} "
        f"({len(dataset.feature_names)} features), snapshot {dataset.snapshot_hash}; "
        f"MLflow run {run_id}"
    )
    return StepResult(str(run_dir), run_id, summary, {"rows": len(frame)})


def load_dataset(run_dir: Path) -> Dataset:
    meta = json.loads((run_dir / DATASET_META).read_text())
    from pyarrow import feather

    frame = feather.read_feather(run_dir / DATASET)
    return Dataset(
        frame,
        meta["feature_names"],
        meta["feature_set_version"],
        meta["horizon_bars"],
        timedelta(seconds=meta["bar_seconds"]),
        meta["snapshot_hash"],
    )


# ---------------------------------------------------------------------------------------
# train


def train(settings: Settings, run_dir: Path) -> StepResult:
    """Walk-forward CV (early stopping per fold) and the final fit -> ``model.ubj``."""
    from signalops.registry import Registry
    from signalops.training.train import train_model

    request = _request(run_dir)
    run_id = _state(run_dir)["mlflow_run_id"]
    dataset = load_dataset(run_dir)
    started = time.perf_counter()
    result = train_model(dataset, settings.training, request.params)
    seconds = time.perf_counter() - started
    result.booster.save_model(str(run_dir / c.NATIVE_MODEL))
    np.savez(run_dir / SPLIT, train=result.holdout.train, holdout=result.holdout.valid)
    cv = {
        k: float(np.mean([f[k] for f in result.folds]))
        for k in ("roc_auc", "log_loss", "accuracy", "best_trees")
    }
    record = {
        "n_trees": result.n_trees,
        "params": result.params,
        "folds": result.folds,
        "cv_mean": cv,
        "train_rows": len(result.holdout.train),
        "holdout_rows": len(result.holdout.valid),
        "seconds": {**result.timings, "train_step": seconds},
        "peak_rss_mb": peak_rss_mb(),
    }
    atomic_write_bytes(run_dir / TRAIN_JSON, json.dumps(record, indent=2, default=str).encode())

    registry = Registry(settings)
    registry.log_params(
        run_id,
        {
            **{f"xgb.{k}": v for k, v in request.params.model_dump().items()},
            **{f"booster.{k}": v for k, v in result.params.items()},
            "n_trees": result.n_trees,
            "train_rows": len(result.holdout.train),
            "holdout_rows": len(result.holdout.valid),
        },
    )
    for fold in result.folds:
        registry.log_metrics(
            run_id,
            {f"cv_{k}": float(v) for k, v in fold.items() if k != "fold"},
            step=int(fold["fold"]),
        )
    registry.log_metrics(
        run_id,
        {
            **{f"cv_mean_{k}": v for k, v in cv.items()},
            "n_trees": result.n_trees,
            "cv_seconds": result.timings["cv_seconds"],
            "final_fit_seconds": result.timings["final_fit_seconds"],
            "training_seconds": seconds,
            "peak_rss_mb": peak_rss_mb(),
        },
    )
    summary = (
        f"trained: {len(result.folds)} walk-forward folds (mean AUC {cv['roc_auc']:.4f}, "
        f"log loss {cv['log_loss']:.4f}), final fit on {len(result.holdout.train)} rows with "
        f"{result.n_trees} trees in {result.timings['final_fit_seconds']:.1f} s; "
        f"{len(result.holdout.valid)} holdout rows kept out; "
        f"peak RSS {record['peak_rss_mb']:.0f} MB"
    )
    return StepResult(str(run_dir), run_id, summary, {"n_trees": result.n_trees, **cv})


def _split(run_dir: Path) -> Split:
    data = np.load(run_dir / SPLIT)
    return Split(data["train"], data["holdout"])


def _booster(run_dir: Path) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(run_dir / c.NATIVE_MODEL))
    return booster


# ---------------------------------------------------------------------------------------
# export + parity


def export(settings: Settings, run_dir: Path) -> StepResult:
    """ONNX export and the parity gate on the whole holdout; a failure ends the run here."""
    from signalops.registry import Registry
    from signalops.training.onnx_export import ParityError, check_parity, export_onnx

    run_id = _state(run_dir)["mlflow_run_id"]
    dataset, split, booster = load_dataset(run_dir), _split(run_dir), _booster(run_dir)
    x = dataset.x
    model = export_onnx(booster, x.shape[1], run_dir / c.ONNX_MODEL)
    report, p_native, p_onnx = check_parity(
        booster,
        model,
        x[split.valid],
        settings.training.max_parity_error,
        settings.evaluation.threshold,
    )
    atomic_write_bytes(run_dir / c.PARITY_JSON, json.dumps(report.as_dict(), indent=2).encode())
    holdout = dataset.frame.iloc[split.valid][["symbol", "ts", "label_return", "label_up"]]
    scores = holdout.assign(p_xgboost=p_native, p_onnx=p_onnx)
    atomic_write_table(run_dir / HOLDOUT_SCORES, pa.Table.from_pandas(scores, preserve_index=False))
    registry = Registry(settings)
    registry.set_tags(
        run_id,
        {
            c.TAG_PARITY_ERROR: f"{report.max_abs_error:.3g}",
            c.TAG_PARITY: "passed" if report.passed else "failed",
        },
    )
    registry.log_metrics(
        run_id,
        {
            "parity_max_abs_error": report.max_abs_error,
            "parity_label_mismatches": report.label_mismatches,
        },
    )
    registry.log_artifact(run_id, run_dir / c.PARITY_JSON, "evaluation")
    if not report.passed:
        error = ParityError(report)
        registry.set_tags(run_id, {c.TAG_STATUS_REASON: str(error)})
        registry.end_run(run_id, "FAILED")
        raise error
    summary = (
        f"ONNX export: {report.onnx_trees} trees, max |p_onnx - p_xgboost| "
        f"{report.max_abs_error:.2e} on {report.rows} holdout rows (tolerance "
        f"{report.tolerance:g}), labels identical: parity passed"
    )
    return StepResult(str(run_dir), run_id, summary, {"parity_max_abs_error": report.max_abs_error})


# ---------------------------------------------------------------------------------------
# evaluate


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


def describe(settings: Settings, run_dir: Path) -> StepResult:
    """What a version carries beside its model: SHAP importance (+ plot) on the validation
    rows, the drift monitor's reference profile (with the null critical values of its
    statistics, on the training rows) and the feature spec, the sidecar's input contract."""
    import xgboost as xgb

    from signalops.drift.profile import build_profile, save_profile
    from signalops.features.definitions import get_feature_set
    from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME, onnx_feature_names
    from signalops.training.explain import shap_importance, write_shap

    run_id = _state(run_dir)["mlflow_run_id"]
    dataset, split, booster = load_dataset(run_dir), _split(run_dir), _booster(run_dir)
    names, x = dataset.feature_names, dataset.x
    importance = shap_importance(booster, x[split.valid], names)
    write_shap(importance, run_dir / c.SHAP_JSON, run_dir / c.SHAP_PLOT)

    train_scores = booster.predict(
        xgb.DMatrix(x[split.train], feature_names=onnx_feature_names(len(names)))
    )
    profile = build_profile(
        dataset.frame.iloc[split.train],
        names,
        scores=train_scores,
        labels=dataset.y[split.train],
        quantile=settings.drift.null_quantile,
        blocks=settings.drift.null_blocks,
        significance=settings.drift.significance,
    )
    profile["feature_set_version"] = dataset.feature_set_version
    save_profile(profile, run_dir / c.REFERENCE_PROFILE)

    spec = get_feature_set(dataset.feature_set_version).spec(dataset.horizon_bars)
    spec["input"], spec["output"] = INPUT_NAME, OUTPUT_NAME
    spec["bar_minutes"] = int(dataset.bar.total_seconds() // 60)
    atomic_write_bytes(run_dir / c.FEATURE_SPEC, json.dumps(spec, indent=2).encode())
    top = ", ".join(f"{k} {v:.3g}" for k, v in list(importance.items())[:3])
    summary = (
        f"described: SHAP top {top}; reference profile of {len(split.train)} training rows; "
        f"feature spec {dataset.feature_set_version} ({len(names)} inputs)"
    )
    return StepResult(
        str(run_dir), run_id, summary, {"shap_top": dict(list(importance.items())[:10])}
    )


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
    run_id = _state(run_dir)["mlflow_run_id"]
    dataset, split = load_dataset(run_dir), _split(run_dir)
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

    title = f"{settings.signal_name} challenger (run {_request(run_dir).run_key})"
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
    _save_state(run_dir, action=action, passed=decision["passed"])
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


# ---------------------------------------------------------------------------------------
# register / reject


def register(settings: Settings, run_dir: Path) -> StepResult:
    """Register the version (all artifacts) and set its alias: challenger, or champion first."""
    from signalops.registry import Registry
    from signalops.registry.packaging import package_model

    state = _state(run_dir)
    run_id, action = state["mlflow_run_id"], state.get("action")
    parity_file = run_dir / c.PARITY_JSON
    parity = json.loads(parity_file.read_text()) if parity_file.exists() else None
    if parity is None or not parity["passed"]:  # never register what failed parity
        failures = parity["failures"] if parity else ["no parity check on record"]
        raise BadInputError(f"register {run_dir.name}: parity failed: {failures}")
    if action not in (c.ALIAS_CHAMPION, c.ALIAS_CHALLENGER):
        raise BadInputError(f"register {run_dir.name}: the gate did not pass (action {action!r})")
    registry = Registry(settings)
    dataset, booster = load_dataset(run_dir), _booster(run_dir)
    run_tags = registry.run_tags(run_id)
    version = run_tags.get(c.TAG_MODEL_VERSION)
    if version is None:  # a retried register does not create a second version
        folder = package_model(run_dir, booster, len(dataset.feature_names))
        registry.log_artifacts(run_id, folder, c.MODEL_DIR)
        version = registry.register_version(
            run_id,
            tags={
                c.TAG_SNAPSHOT: dataset.snapshot_hash,
                c.TAG_FEATURE_SET: dataset.feature_set_version,
                c.TAG_TRAINING_KEY: state["training_key"],
                c.TAG_PARITY_ERROR: f"{parity['max_abs_error']:.3g}",
                c.TAG_CODE_VERSION: run_tags.get(c.TAG_CODE_VERSION, "?"),
                c.TAG_GATE: "passed",
                c.TAG_RUN_KEY: _request(run_dir).run_key,
            },
            description=(run_dir / c.EVALUATION_MD).read_text()[:5000],
        )
        registry.set_tags(run_id, {c.TAG_MODEL_VERSION: version})
    previous = registry.aliases()
    registry.set_alias(action, version)
    if action == c.ALIAS_CHALLENGER:
        # A new challenger starts at zero traffic: the rollout moves the weight from here.
        registry.set_model_tag(c.CANARY_WEIGHT_TAG, "0")
    registry.end_run(run_id, "FINISHED")
    _save_state(run_dir, model_version=version)
    replaced = previous.get(action)
    summary = (
        f"registered {registry.name} version {version} with alias '{action}'"
        + (f" (replacing version {replaced})" if replaced and replaced != version else "")
        + f"; MLflow run {run_id}"
    )
    return StepResult(str(run_dir), run_id, summary, {"version": version, "alias": action})


def reject(settings: Settings, run_dir: Path) -> StepResult:
    """Close the run of a challenger the gate rejected: nothing is registered."""
    from signalops.registry import Registry

    run_id = _state(run_dir)["mlflow_run_id"]
    report = json.loads((run_dir / c.EVALUATION_JSON).read_text())
    reasons = report["decision"]["reasons"]
    registry = Registry(settings)
    registry.set_tags(run_id, {c.TAG_STATUS_REASON: "gate rejected: " + "; ".join(reasons)})
    registry.end_run(run_id, "FINISHED")
    return StepResult(
        str(run_dir),
        run_id,
        "not registered, the gate rejected it: " + "; ".join(reasons),
        {"reasons": reasons},
    )


def outcome_alert(settings: Settings, result: StepResult, registered: bool) -> Alert:
    """The Slack message for the end of a retrain run."""
    if registered:
        return Alert(
            title=f"signalops: {settings.signal_name} v{result.figures['version']} registered",
            text=result.summary,
            severity="info",
            fields={"alias": str(result.figures["alias"]), "mlflow run": str(result.mlflow_run_id)},
        )
    return Alert(
        title=f"signalops: {settings.signal_name} challenger rejected by the gate",
        text=result.summary,
        severity="warning",
        fields={"mlflow run": str(result.mlflow_run_id)},
    )


def run_all(
    settings: Settings, request: RetrainRequest, timings: dict[str, float] | None = None
) -> dict[str, StepResult]:
    """Every step in order, in this process (the CLI and the benchmark use it)."""
    run_dir = write_request(settings, request)
    results: dict[str, StepResult] = {}
    timings = {} if timings is None else timings

    def run(name: str, step: Any) -> StepResult:
        started = time.perf_counter()
        results[name] = step(settings, run_dir)
        timings[name] = time.perf_counter() - started
        return results[name]

    for name, step in (
        ("assemble", assemble),
        ("train", train),
        ("export", export),
        ("describe", describe),
    ):
        run(name, step)
    if run("evaluate", evaluate).figures["passed"]:
        run("register", register)
    else:
        run("reject", reject)
    return results
