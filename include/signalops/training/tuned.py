"""What a study found and when the next one is due: the tuned parameters stored on the
registered model (tag ``signalops.tuned_params.<feature set>``), read by every retrain's
plan, and the rule that says whether a run tunes (``tuning_plan``)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from signalops.config import Settings, XGBoostParams
from signalops.registry import contracts as c

if TYPE_CHECKING:
    from signalops.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunedParams:
    """A feature set's stored tuning: the searched parameters' best values, and whence."""

    params: dict[str, float]
    tuned_at: datetime
    run_key: str
    mlflow_run_id: str | None
    metric: str
    value: float
    incumbent_value: float
    trials: int

    def describe(self) -> str:
        return f"tuned parameters of run {self.run_key} ({self.tuned_at:%Y-%m-%d %H:%M} UTC)"

    def as_json(self) -> str:
        return json.dumps({**asdict(self), "tuned_at": self.tuned_at.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> TunedParams:
        data = json.loads(text)
        return cls(**{**data, "tuned_at": datetime.fromisoformat(data["tuned_at"])})


def tuned_tag(feature_set_version: str) -> str:
    return f"{c.TUNED_PARAMS_TAG}.{feature_set_version}"


def read_tuned(
    settings: Settings, feature_set_version: str, registry: Registry | None = None
) -> TunedParams | None:
    """The feature set's stored tuned parameters (registered-model tag), if any."""
    from signalops.registry import Registry

    registry = registry or Registry(settings)
    text = registry.model_tag(tuned_tag(feature_set_version))
    if not text:
        return None
    try:
        tuned = TunedParams.from_json(text)
        XGBoostParams.model_validate(tuned.params)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning(
            "ignoring the unreadable tag %s of %s (%s): training.xgboost is used and the "
            "next tuning replaces it",
            tuned_tag(feature_set_version),
            registry.name,
            exc,
        )
        return None
    return tuned


def tuning_plan(
    settings: Settings,
    tuned: TunedParams | None,
    feature_set_version: str,
    trigger: str | None,
    tune_trials: int | None,
    now: datetime | None = None,
) -> tuple[int, str]:
    """(trials, why) of a run: ``tune_trials`` if given, else the schedule of ``tuning``."""
    cfg = settings.tuning
    if tune_trials is not None:
        return tune_trials, f"the run's tune_trials={tune_trials}"
    due = True
    if cfg.trials == 0:
        due, why = False, "tuning.trials is 0 (a run tunes when its tune_trials param asks)"
    elif trigger == "drift" and cfg.on_drift:
        why = "a drift-triggered run (tuning.on_drift)"
    elif cfg.every_days == 0:
        due, why = False, "not on a schedule (tuning.every_days is 0)"
    elif tuned is None:
        why = f"no tuned parameters stored for feature set {feature_set_version}"
    else:
        age = ((now or datetime.now(UTC)) - tuned.tuned_at).total_seconds() / 86400
        due = age >= cfg.every_days
        why = (
            f"the tuned parameters are {age:.1f} days old (tuning.every_days {cfg.every_days:g})"
            if due
            else f"tuned {age:.1f} days ago, next tuning in {cfg.every_days - age:.1f} days"
        )
    return (cfg.trials if due else 0), why
