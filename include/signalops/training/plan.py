"""The plan of a retrain run: which window, symbols, feature set and hyperparameters.

``plan_request`` merges the run's params (DAG params, CLI flags) over the configured
defaults and checks them; the :class:`RetrainRequest` it returns is written to the run
directory (``rundir.write_request``) and read back by every later step.

Hyperparameters: ``training.xgboost``, under the feature set's stored tuned parameters
(``tuning.use_tuned``), under the run's own. Whether the run tunes, and why, is decided
here too (:func:`signalops.training.tuned.tuning_plan`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from signalops.config import Settings, XGBoostParams
from signalops.errors import BadInputError
from signalops.training.dataset import InsufficientDataError
from signalops.windows import parse_ts, resolve_window


@dataclass
class RetrainRequest:
    run_key: str
    start: datetime
    end: datetime
    symbols: list[str]
    feature_set_version: str
    params: XGBoostParams
    force: bool = False
    tune_trials: int = 0  # > 0: the tune step runs a study of this many trials
    tune_reason: str = ""  # why the run tunes, or does not
    params_source: str = "training.xgboost"  # where ``params`` came from, in words
    fixed: list[str] = field(default_factory=list)  # set by the run: the study keeps them

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "symbols": self.symbols,
            "feature_set_version": self.feature_set_version,
            "params": self.params.model_dump(),
            "force": self.force,
            "tune_trials": self.tune_trials,
            "tune_reason": self.tune_reason,
            "params_source": self.params_source,
            "fixed": self.fixed,
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
            tune_trials=int(data.get("tune_trials", 0)),
            tune_reason=str(data.get("tune_reason", "")),
            params_source=str(data.get("params_source", "training.xgboost")),
            fixed=list(data.get("fixed", [])),
        )


def plan_request(
    settings: Settings,
    params: Mapping[str, Any],
    run_key: str,
    now: datetime | None = None,
) -> RetrainRequest:
    """The run's window, symbols, feature set and hyperparameters from params over config.

    ``params["tune_trials"]``: None (the tuning schedule decides), 0 (no tuning) or the
    trials to run now; ``params["trigger"]``: ``"drift"`` for a drift-triggered run.
    """
    from signalops.features.definitions import get_feature_set
    from signalops.features.offline_store import OfflineStore
    from signalops.training.tuned import read_tuned, tuning_plan

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
    tune_trials = params.get("tune_trials")
    if tune_trials is not None and (
        isinstance(tune_trials, bool) or not isinstance(tune_trials, int) or tune_trials < 0
    ):
        raise BadInputError(
            f"retrain params: tune_trials must be empty or an integer >= 0, got {tune_trials!r}"
        )
    tuned = read_tuned(settings, version)  # its age also drives the tuning schedule
    use = tuned if settings.tuning.use_tuned else None
    source = "training.xgboost"
    if use is not None:
        source = f"{use.describe()} over training.xgboost"
    if overrides:
        source = f"run params ({', '.join(sorted(overrides))}) over {source}"
    merged = {
        **settings.training.xgboost.model_dump(),
        **(use.params if use is not None else {}),
        **overrides,
    }
    try:
        xgb_params = XGBoostParams.model_validate(merged)
    except ValueError as exc:
        raise BadInputError(f"retrain params: invalid hyperparameters: {exc}") from None
    trials, reason = tuning_plan(
        settings, tuned, version, params.get("trigger"), tune_trials, now=now
    )
    return RetrainRequest(
        run_key=run_key,
        start=start_dt,
        end=end_dt,
        symbols=symbols,
        feature_set_version=version,
        params=xgb_params,
        force=bool(params.get("force", False)),
        tune_trials=trials,
        tune_reason=reason,
        params_source=source,
        fixed=sorted(overrides),
    )
