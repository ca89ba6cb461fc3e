"""
### Market data collection

Collects the bars of the run's **data interval** (hourly, `[start, end)` in UTC) from the
configured source (`synthetic` by default; `csv`, `parquet` or a `postgres` table/query),
validates them and upserts them into the warehouse `bars` table keyed by `(symbol, ts)`.

* **extract** fetches and validates; a bad batch (missing column, unparsable timestamp,
  high < low, negative volume, duplicate `(symbol, ts)`) fails here with the file, line and
  column named, and **nothing is written**. Gaps are logged, never filled.
* **validate** is the validation gate: the Great Expectations suite `bars` (schema, types,
  not-null, high >= max(open, close), low <= min(open, close), volume >= 0, unique
  `(symbol, ts)`, monotonic time and bounded gaps per symbol, counting the warehouse's
  previous bar). A failure stops the run before anything is loaded; the task log names the
  expectation, column, row count and examples and links the GX data docs.
* **load** upserts the staged file: a rerun changes nothing, a late correction overwrites.
  It emits the `signalops/bars` Asset (with the window in its `extra`), which schedules the
  `features` DAG.

History: trigger with the `start`/`end` params to collect any range in one run, or create a
backfill from the UI. A scheduled run continues the warehouse: when its newest bar lies
before the interval, the run collects from the bar after it (up to `market.catchup_max_bars`,
a week of 5-minute bars; beyond that it fails with the backfill command to run).
Source settings come from `SIGNALOPS_MARKET__*` / `signalops.yaml`.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from signalops.assets import BARS
from signalops.dag_defaults import DAG_CALLBACKS, DEFAULT_ARGS, START_DATE, task_errors


@dag(
    dag_id="market_data",
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=5,
    **DAG_CALLBACKS,
    default_args=DEFAULT_ARGS,
    tags=["signalops", "data"],
    doc_md=__doc__,
    params={
        "start": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Collect from here (UTC, ISO-8601). Empty: the run's data interval start.",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date-time",
            description="Collect up to here, exclusive. Empty: the run's data interval end.",
        ),
        "symbols": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Symbols to collect. Empty: every configured symbol.",
        ),
    },
)
def market_data() -> None:
    @task
    def extract(
        params: Any = None, data_interval_start: Any = None, data_interval_end: Any = None
    ) -> dict:
        """Fetch + validate the window into a staging Parquet file; return its path."""
        from signalops.config import load_settings
        from signalops.data.collect import catch_up_start, extract_bars
        from signalops.windows import resolve_window

        with task_errors():
            settings = load_settings()
            symbols = params["symbols"] or None
            start, end = resolve_window(
                params["start"],
                params["end"],
                data_interval_start,
                data_interval_end,
                "market_data",
            )
            if not params["start"]:  # a scheduled interval continues the warehouse's bars
                start = catch_up_start(settings, start, symbols)
            return extract_bars(settings, start, end, symbols).as_dict()

    @task
    def validate(staged: dict, run_id: Any = None) -> dict:
        """The validation gate: the batch against the versioned GX suite `bars`."""
        from airflow.sdk.exceptions import AirflowSkipException

        from signalops.config import load_settings
        from signalops.validation.gate import gate_bars

        if staged["rows"] == 0:
            raise AirflowSkipException(f"no bars in {staged['start']} .. {staged['end']}")
        with task_errors():
            report = gate_bars(load_settings(), staged, f"{run_id}")
        return {**staged, "validation": report["json_path"]}

    @task(outlets=[BARS])
    def load(staged: dict, outlet_events: Any = None) -> dict:
        """Upsert the staged bars into the warehouse and announce them."""
        from airflow.sdk.exceptions import AirflowSkipException

        from signalops.config import load_settings
        from signalops.data.collect import load_bars

        if staged["rows"] == 0:
            raise AirflowSkipException(f"no bars in {staged['start']} .. {staged['end']}")
        with task_errors():
            result = load_bars(load_settings(), staged["path"], staged["source"])
        outlet_events[BARS].extra = {"start": staged["start"], "end": staged["end"], **result}
        return result

    load(validate(extract()))


market_data()
