"""
### Outcomes (hourly)

Joins the sidecar's logged predictions whose horizon has matured with the realized label
from the bars (the training label: close `H` bars after the features' bar above its
close), into the warehouse table `outcomes`, keyed like the prediction (a rerun adds
nothing twice). Predictions that have not matured, or whose bars have not landed yet, wait
for a later run. The canary guards and label drift read live accuracy from here.

Then `explain` stores TreeSHAP explanations of the logged predictions not explained yet
(oldest first, at most `explain.batch_rows` a run) in `prediction_explanations`: each
prediction's features are read again from the offline store at its symbol and bar time,
checked against the logged features hash, and explained by the native XGBoost model of the
version that scored it (top `explain.top_k` contributions, the rest's sum, the base value
and the margin). Predictions it cannot explain get a row saying why, so none is read twice.
"""

from __future__ import annotations

from airflow.sdk import dag, task

from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors


@dag(
    dag_id="outcomes",
    schedule="@hourly",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,
    tags=["signalops", "rollout", "monitoring"],
    doc_md=__doc__,
)
def outcomes() -> None:
    @task
    def join() -> dict:
        """Label matured predictions (idempotent)."""
        from signalops.config import load_settings
        from signalops.rollout.outcomes import join_outcomes

        with task_errors():
            return join_outcomes(load_settings())

    @task
    def explain() -> dict:
        """TreeSHAP contributions of the logged predictions not explained yet (idempotent)."""
        from signalops.config import load_settings
        from signalops.explanations import explain_predictions

        with task_errors():
            return explain_predictions(load_settings())

    join() >> explain()


outcomes()
