"""
### Rollback (manual)

Sets the `champion` alias back to `previous-champion`, or to the version chosen in the
form, records it in `rollouts` (status `manual`) and alerts. A rollout in progress, or a
new champion's watch, ends as rolled back (its weight goes to 0). The sidecar polls the
aliases and serves the restored version within its poll interval
(`serving.poll_interval_s`, 5 s): measured from this DAG's alias change to the first
response by that version, see the README.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Param, dag, task

from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors


@dag(
    dag_id="rollback",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,  # idempotent: a retry after the move changes nothing
    tags=["signalops", "rollout", "manual"],
    doc_md=__doc__,
    params={
        "version": Param(
            None,
            type=["null", "string"],
            description="Version to restore as champion. Empty: previous-champion.",
        ),
        "reason": Param("", type="string", description="Why (recorded and alerted)."),
        "signal": Param(
            None, type=["null", "string"], description="Registered model. Empty: signal_name."
        ),
    },
)
def rollback() -> None:
    @task
    def restore(params: Any = None) -> dict:
        """Move `champion` (the old one becomes `previous-champion`)."""
        from signalops.config import load_settings
        from signalops.rollout.canary import rollback as run_rollback

        with task_errors():
            return run_rollback(
                load_settings(), params["version"], params["reason"], params["signal"]
            )

    restore()


rollback()
