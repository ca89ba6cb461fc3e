"""One typed settings object: defaults < YAML file < SIGNALOPS_* environment variables.

The YAML file is the one named by ``SIGNALOPS_CONFIG``, else ``signalops.yaml`` in the
working directory when it exists. Environment variables use ``__`` for nesting:
``SIGNALOPS_WAREHOUSE__URL=postgresql+psycopg2://...`` sets ``warehouse.url``; list values
are comma separated (``SIGNALOPS_MARKET__SYMBOLS=AAA,BBB``).

Loading has no side effects (no folders are created): callers that write create what they
write. A bad setting raises :class:`ConfigError` naming the setting and where it came from.

Import every name from here (``from signalops.config import Settings, load_settings``);
the modules behind it, by concern:

- :mod:`~signalops.config.settings`: :class:`Settings` and ``bar_defaults``;
- :mod:`~signalops.config.loading`: ``load_settings`` (YAML file + environment);
- :mod:`~signalops.config.market`: market/bars, features, data validation;
- :mod:`~signalops.config.lifecycle`: training, tuning, evaluation gate, drift, rollout;
- :mod:`~signalops.config.serving`: the sidecar, ensembles, the risk guard;
- :mod:`~signalops.config.services`: warehouse, online store, MLflow, alerts, links;
- :mod:`~signalops.config.explain`: the explanations per prediction;
- :mod:`~signalops.config.base`: the section base model, ``ConfigError``, ``as_utc``.
"""

from __future__ import annotations

from signalops.config.base import ConfigError, as_utc
from signalops.config.explain import ExplainSettings
from signalops.config.lifecycle import (
    DriftSettings,
    EvaluationSettings,
    RolloutSettings,
    TrainingSettings,
    TuningSettings,
    TuningSpace,
    XGBoostParams,
)
from signalops.config.loading import CONFIG_ENV, DEFAULT_CONFIG_FILE, ENV_PREFIX, load_settings
from signalops.config.market import (
    FeatureSettings,
    MarketSettings,
    SyntheticSettings,
    ValidationSettings,
)
from signalops.config.services import (
    AlertSettings,
    LinkSettings,
    MlflowSettings,
    OnlineStoreSettings,
    WarehouseSettings,
)
from signalops.config.serving import EnsembleSettings, RiskSettings, ServingSettings
from signalops.config.settings import Settings, bar_defaults

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "ENV_PREFIX",
    "AlertSettings",
    "ConfigError",
    "DriftSettings",
    "EnsembleSettings",
    "EvaluationSettings",
    "ExplainSettings",
    "FeatureSettings",
    "LinkSettings",
    "MarketSettings",
    "MlflowSettings",
    "OnlineStoreSettings",
    "RiskSettings",
    "RolloutSettings",
    "ServingSettings",
    "Settings",
    "SyntheticSettings",
    "TrainingSettings",
    "TuningSettings",
    "TuningSpace",
    "ValidationSettings",
    "WarehouseSettings",
    "XGBoostParams",
    "as_utc",
    "bar_defaults",
    "load_settings",
]
