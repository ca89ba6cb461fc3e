"""The run directory of a retrain run: the files its steps hand over, and its state.

Each step reads what the steps before it wrote under ``<state>/retrain/<run key>/`` and
writes its own files there; only a small :class:`StepResult` goes to XCom. Named here:

- ``request.json``: the plan (:class:`~signalops.training.plan.RetrainRequest`);
- ``state.json``: what later steps and retries need (MLflow run id, training key, the gate's
  action, the model version), merged key by key by :func:`save_state`;
- ``dataset.arrow`` + ``dataset.json``: the run's exact training rows (:func:`load_dataset`);
- ``split.npz`` and the booster (``model.ubj``): :func:`load_split`, :func:`load_booster`;
- ``train.json`` and ``holdout_scores.parquet``: the train and export steps' records;
- ``tuning.json`` (every trial) and ``best_params.json`` (what train then fits with): the
  tune step's records, when the run tunes (:func:`read_params`).

The files that travel with a registered version (ONNX model, parity, SHAP, reference
profile, feature spec, evaluation report) take their names from
:mod:`signalops.registry.contracts`.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from signalops.config import Settings, XGBoostParams
from signalops.files import atomic_write_bytes
from signalops.registry import contracts as c
from signalops.training.dataset import Dataset, Split
from signalops.training.plan import RetrainRequest

DATASET = "dataset.arrow"  # Arrow IPC (zstd): the run's exact training rows
DATASET_META = "dataset.json"
REQUEST = "request.json"
SPLIT = "split.npz"
TRAIN_JSON = "train.json"
HOLDOUT_SCORES = "holdout_scores.parquet"
STATE = "state.json"
TUNING_JSON = "tuning.json"


@dataclass
class StepResult:
    """What a step returns to XCom: references and a few figures, never data."""

    run_dir: str
    mlflow_run_id: str | None
    summary: str
    figures: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_directory(settings: Settings, run_key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_key).strip("._") or "run"
    return settings.state_dir / "retrain" / safe


def write_request(settings: Settings, request: RetrainRequest) -> Path:
    run_dir = run_directory(settings, request.run_key)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / REQUEST, json.dumps(request.as_dict(), indent=2).encode())
    return run_dir


def read_request(run_dir: Path) -> RetrainRequest:
    return RetrainRequest.from_dict(json.loads((run_dir / REQUEST).read_text()))


def read_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / STATE
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(run_dir: Path, **updates: Any) -> dict[str, Any]:
    state = {**read_state(run_dir), **updates}
    atomic_write_bytes(run_dir / STATE, json.dumps(state, indent=2).encode())
    return state


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


def read_params(run_dir: Path) -> XGBoostParams:
    """The hyperparameters the run fits with: its tuning's best, else the plan's."""
    best = run_dir / c.BEST_PARAMS
    if best.exists():
        return XGBoostParams.model_validate(json.loads(best.read_text())["params"])
    return read_request(run_dir).params


def load_split(run_dir: Path) -> Split:
    data = np.load(run_dir / SPLIT)
    return Split(data["train"], data["holdout"])


def load_booster(run_dir: Path) -> Any:
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(run_dir / c.NATIVE_MODEL))
    return booster
