"""
### Canary rollout (every 15 minutes, and when a challenger is registered)

Moves a registered `challenger` through the rollout steps (`rollout.steps`, default shadow
→ 1% → 10% → 50% → 100%) by publishing the canary weight (registered-model tag
`signalops.canary_weight`) that the sidecar routes by, one step per run at most:

* **outcomes** first labels the predictions that matured, so the guards see them;
* **tick** starts a rollout for a new challenger (a newer one supersedes a running rollout,
  recorded), judges the current step on live data (latency p95 and score distribution
  against the champion; shadow agreement; live accuracy and log loss once enough outcomes
  matured, one-sided tests; the error rate from the sidecar's failed scorings against
  the champion's, `rollout.max_error_rate_excess`), advances after
  `rollout.min_step_minutes` with `rollout.min_predictions`, promotes at 100% (`champion`
  moves, the old one becomes `previous-champion`, `challenger` is removed) or rolls back
  at once on a breach. Every transition is a row update in `rollouts` with its numbers and
  a Slack message; a finished rollout's A/B report goes to the challenger's MLflow run
  (`ab_report/`), linked from the row;
* after a promotion, **tick** watches the new champion for `rollout.watch_hours` (status
  `watching`): the same guards against the previous champion's record; a breach moves
  `champion` back, else the watch ends `done`.

A run killed mid-transition is completed (or reverted) by the next one.
"""

from __future__ import annotations

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from signalops.assets import CHALLENGER_REGISTERED
from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors


@dag(
    dag_id="canary",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/15 * * * *", timezone="UTC"),
        assets=[CHALLENGER_REGISTERED],
    ),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,
    tags=["signalops", "rollout"],
    doc_md=__doc__,
)
def canary() -> None:
    @task
    def outcomes() -> dict:
        """Label the matured predictions first."""
        from signalops.config import load_settings
        from signalops.rollout.outcomes import join_outcomes

        with task_errors():
            return join_outcomes(load_settings())

    @task
    def tick(joined: dict) -> dict:
        """One step of the state machine for the configured signal."""
        from signalops.config import load_settings
        from signalops.rollout.canary import tick as run_tick

        with task_errors():
            return run_tick(load_settings())

    tick(outcomes())


canary()
