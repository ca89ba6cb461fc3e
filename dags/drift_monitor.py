"""
### Drift monitor (hourly)

Compares the last window of features from the offline store, **each symbol's last
`window_bars` bars** before the end (param `window_bars`, default `drift.window_bars`: a
day of 5-minute bars, five days of hourly bars, a quarter of daily bars), with the
**champion's reference profile** (logged with the model version by `retrain`), and the
champion's scores on that window with its reference scores.

* **check**: per feature PSI (on the reference's quantile bins), KS statistic + p-value and
  normalized Wasserstein distance; prediction drift (PSI of the scores); label drift
  (accuracy and Brier of the champion on the matured labels of the window vs its holdout).
  Each is judged against the profile's **null critical values**: what windows of the same
  number of rows drawn from the champion's own training data give (README, "Drift: how
  severity is calibrated"), and must also pass its materiality threshold. Overall severity
  none / low / medium / high with reasons and recommendations; rows in the warehouse tables
  `drift_checks` + `drift_features`, keyed by the window's start and end (a rerun of the
  window rewrites them; windows of other lengths keep their own rows). Too few current
  rows, or no champion yet: skipped with the reason, no verdict.
* **report**: an Evidently data-drift report (HTML, bounded samples) under
  `<state_dir>/drift/reports`, logged to MLflow (experiment `signalops/<signal>/drift`).
* **alert**: medium or high sends one Slack alert; an ongoing drift of the same (or lower)
  severity does not alert again within `drift.realert_hours`.
* **retrain_needed** → **drift_detected**: on a high-severity alert, emits the
  `signalops/drift_detected` Asset, which schedules `retrain`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task

from signalops.assets import DRIFT_DETECTED
from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors


@dag(
    dag_id="drift_monitor",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,
    tags=["signalops", "drift", "monitoring"],
    doc_md=__doc__,
    params={
        "end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Window end (UTC, exclusive). Empty: the run's data interval end.",
        ),
        "window_bars": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Window length: each symbol's last N bars before the end. "
            "Empty: drift.window_bars.",
        ),
        "signal": Param(
            None, type=["null", "string"], description="Registered model. Empty: signal_name."
        ),
    },
)
def drift_monitor() -> None:
    @task
    def check(params: Any = None, data_interval_end: Any = None) -> dict:
        """Statistics, severity, warehouse rows; skipped when there is nothing to judge."""
        from airflow.sdk.exceptions import AirflowSkipException

        from signalops.config import load_settings
        from signalops.drift.monitor import run_check
        from signalops.windows import parse_ts

        with task_errors():
            end = parse_ts(params["end"] or data_interval_end, "end")
            result = run_check(load_settings(), end, params["window_bars"], params["signal"])
        if result.status != "checked":
            raise AirflowSkipException(result.summary())
        summary = result.as_dict()
        summary.pop("features")  # in the warehouse; XCom keeps the verdict
        return summary

    @task
    def report(summary: dict, params: Any = None) -> dict:
        """Evidently report (HTML) on bounded samples; logged to MLflow."""
        from signalops.config import load_settings
        from signalops.drift.report import report_check

        with task_errors():
            return report_check(load_settings(), summary)

    @task
    def alert(summary: dict, run_id: Any = None) -> dict:
        """One Slack alert for medium/high drift, linked to the signal's page (its Evidently
        report) and this run; the window counts as alerted only once it was delivered."""
        from signalops.alerts.ledger import deliver
        from signalops.config import load_settings
        from signalops.drift.alert import drift_alert
        from signalops.drift.records import mark_alerted

        if not summary["alert"]:
            return {"sent": False, "severity": summary["severity"]}
        settings = load_settings()
        message, key, window = drift_alert(settings, summary, run_id=run_id)
        # Suppressed: this window's alert went out in an earlier try. AlertError or a rate
        # limit: this task fails and is retried; the window stays unalerted until then.
        outcome = deliver(message, settings, kind="drift", key=key, window=window)
        if outcome == "rate_limited":
            raise RuntimeError("the drift alert was rate limited: retrying")
        mark_alerted(settings, summary)
        return {"sent": outcome == "sent", "severity": summary["severity"]}

    @task.short_circuit
    def retrain_needed(summary: dict) -> bool:
        """High severity, alerted now (not an ongoing drift already acted on)."""
        return bool(summary["alert"] and summary["severity"] == "high")

    @task(outlets=[DRIFT_DETECTED])
    def drift_detected(summary: dict, outlet_events: Any = None) -> dict:
        """Emit `signalops/drift_detected`: the retrain DAG is scheduled on it."""
        extra = {
            "signal": summary["signal"],
            "model_version": summary["model_version"],
            "start": summary["window_start"],
            "end": summary["window_end"],
            "severity": summary["severity"],
            "reasons": summary["reasons"],
        }
        outlet_events[DRIFT_DETECTED].extra = extra
        return extra

    checked = check()
    reported = report(checked)
    # The retrain trigger follows a delivered alert: both come once, together, even when
    # Slack or the report failed first (the next run sees the window not yet alerted).
    alert(reported) >> retrain_needed(reported) >> drift_detected(reported)


drift_monitor()
