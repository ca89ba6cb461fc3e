"""The ``assemble`` step of retrain: the run's labeled rows, and its MLflow run.

Reads the plan from the run directory, builds the point-in-time labeled dataset
(:func:`~signalops.training.dataset.assemble_dataset`) and writes it as ``dataset.arrow``.
The *training key* (data snapshot + training settings) dedupes runs: a version already
registered under the same key ends the run with :class:`AlreadyTrained`, unless forced. A run
that tunes has no final parameters yet: its key here marks the study, and the ``tune`` step
re-keys the run with the parameters it found (and dedupes then).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa

from signalops.config import Settings, XGBoostParams
from signalops.files import atomic_write_arrow, atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.dataset import Dataset, assemble_dataset
from signalops.training.rundir import (
    DATASET,
    DATASET_META,
    StepResult,
    read_request,
    read_state,
    save_state,
)


class AlreadyTrained(Exception):
    """A registered version was trained on this exact data and settings (no ``force``)."""

    def __init__(self, version: str, key: str):
        self.version = version
        super().__init__(
            f"version {version} was already trained on this data snapshot and settings "
            f"(training key {key}); nothing new to learn. Trigger with force=true to retrain."
        )


def training_key(
    settings: Settings, dataset: Dataset, params: XGBoostParams, tune_trials: int = 0
) -> str:
    """Same data snapshot and same training settings: the same model (training is seeded).

    ``tune_trials`` > 0: the key of a run that has yet to tune (the study's settings in
    place of final parameters), which no registered version carries.
    """
    payload: dict[str, object] = {
        "snapshot": dataset.snapshot_hash,
        "feature_set": dataset.feature_set_version,
        "horizon": dataset.horizon_bars,
        "training": settings.training.model_dump(mode="json", exclude={"xgboost"}),
        "xgboost": params.model_dump(mode="json"),
    }
    if tune_trials:
        payload["tune"] = {"trials": tune_trials, **settings.tuning.model_dump(mode="json")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def assemble(settings: Settings, run_dir: Path) -> StepResult:
    """Point-in-time labeled rows -> ``dataset.arrow``; opens the run's MLflow run."""
    from signalops.registry import Registry, code_version

    request = read_request(run_dir)
    dataset = assemble_dataset(
        settings, request.start, request.end, request.symbols, request.feature_set_version
    )
    key = training_key(settings, dataset, request.params, request.tune_trials)
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
    run_id = read_state(run_dir).get("mlflow_run_id")
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
    save_state(run_dir, mlflow_run_id=run_id, training_key=key)
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
