"""
### Feature engineering

Runs whenever `signalops/bars` lands (and on demand). Computes the declared feature set
(returns, RSI, MACD, Bollinger, realized volatility, ATR, stochastic, momentum, volume trend,
calendar) **point-in-time** per symbol, plus the label: direction of the close over the
next H bars (never a feature).

* **plan_window** picks `[start, end)`: the params if set, else the union of the windows in
  the triggering `signalops/bars` events, else the newest hour of bars in the warehouse.
* **compute_offline** recomputes the touched UTC days into a staging store.
* **validate** is the validation gate: the Great Expectations suite `features.<version>`
  (declared ranges, types, null share, unique `(symbol, ts)`, row count against the bars
  they came from). It fails the run on bad features (the task log names the expectation,
  column, row count and examples, and links the GX data docs under
  `<state_dir>/validation`); when it passes, it publishes the days into the offline store
  (Parquet, partitioned by feature-set version, symbol and day; atomic, idempotent) and
  emits `signalops/features`.
* **publish_online** pushes the newest vector per symbol to the online store (Redis when
  configured, else the warehouse table); never rolls it back to an older bar.

**Backfill a new feature-set version** over history: trigger with `feature_set_version` and
a `start`/`end` covering the history: one run.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task

from signalops.assets import BARS, FEATURES
from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors
from signalops.features.definitions import FEATURE_SETS


@dag(
    dag_id="features",
    schedule=[BARS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,
    tags=["signalops", "features"],
    doc_md=__doc__,
    params={
        "start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Compute from here (UTC). Empty: from the triggering bars events.",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Compute up to here, exclusive. Empty: from the triggering bars events.",
        ),
        "feature_set_version": Param(
            None,
            type=["null", "string"],
            enum=[None, *sorted(FEATURE_SETS)],
            description="Feature-set version to build. Empty: the configured one.",
        ),
    },
)
def features() -> None:
    @task
    def plan_window(params: Any = None, triggering_asset_events: Any = None) -> dict:
        """Resolve the window from params, the triggering Asset events, or the newest bars."""
        from airflow.sdk.exceptions import AirflowSkipException

        from signalops.config import load_settings
        from signalops.features.pipeline import default_feature_window
        from signalops.windows import resolve_window, window_from_extras

        with task_errors():
            if params["start"] or params["end"]:
                start, end = resolve_window(params["start"], params["end"], what="features params")
            else:
                events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
                window = window_from_extras([e.extra or {} for e in events])
                window = window or default_feature_window(load_settings())
                if window is None:
                    raise AirflowSkipException(
                        "the warehouse has no bars yet: run market_data first"
                    )
                start, end = window
        return {
            "start": start.isoformat(),
            "end": end.isoformat(),
            "version": params["feature_set_version"],
        }

    @task
    def compute_offline(window: dict) -> dict:
        """Compute features + labels for the window's days into a staging store."""
        from signalops.config import load_settings
        from signalops.features.pipeline import build_features
        from signalops.validation.gate import features_staging
        from signalops.windows import parse_ts

        settings = load_settings()
        version = window["version"] or settings.features.feature_set_version
        with task_errors():
            return build_features(
                settings,
                parse_ts(window["start"], "start"),
                parse_ts(window["end"], "end"),
                version,
                staging=features_staging(settings, version, window["start"], window["end"]),
            ).as_dict()

    @task(outlets=[FEATURES])
    def validate(built: dict, run_id: Any = None, outlet_events: Any = None) -> dict:
        """The validation gate (GX suite `features.<version>`); publishes the days if it passes."""
        from signalops.config import load_settings
        from signalops.validation.gate import gate_features

        with task_errors():
            report = gate_features(load_settings(), built, f"{run_id}")
        outlet_events[FEATURES].extra = {**built, "validation": report["json_path"]}
        return built

    @task
    def publish_online(built: dict) -> dict:
        """Publish the newest feature vector per symbol to the online store."""
        from signalops.config import load_settings
        from signalops.features.pipeline import publish_online as publish

        with task_errors():
            return publish(load_settings(), built["feature_set_version"])

    publish_online(validate(compute_offline(plan_window())))


features()
