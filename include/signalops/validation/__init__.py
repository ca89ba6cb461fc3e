"""The validation gate: Great Expectations Core suites, declared here in code and versioned.

``bars`` checks a collected batch before it is loaded into the warehouse; ``features.<v>``
checks a computed feature set before it is published to the offline store. Each run keeps
the GX result as JSON and as HTML data docs under ``<state_dir>/validation``. A failing
suite raises :class:`ValidationFailed` whose message says which expectation failed, on which
column, for how many rows, with examples; in Airflow that fails the task at once (no
retries), blocks everything downstream, and sends the failure alert.

GX runs in-process with an ephemeral context (no GX project on disk, no Airflow provider).
"""

from __future__ import annotations

import copy
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from signalops.calendar import MarketCalendar
from signalops.config import Settings
from signalops.errors import BadInputError
from signalops.features.definitions import FeatureSet

log = logging.getLogger(__name__)

SUITE_VERSION = 1
"""Bumped whenever an expectation changes: results name the suite version they ran."""

STEP_COLUMN = "ts_step_s"
"""Derived for the bars suite: seconds since the symbol's previous bar (the warehouse's
last bar before the batch counts), so monotonic time is a column check."""

GAP_COLUMN = "missing_bars"
"""Derived for the bars suite: bars the market calendar expected between the symbol's
previous bar and this one (weekends and closed sessions are not missing), so a bounded gap
is a column check and a failure names the bar after the hole."""

MAX_EXAMPLES = 5


@dataclass(frozen=True)
class Failure:
    expectation: str
    column: str | None
    unexpected: int | None
    rows: int | None
    examples: list[Any]
    observed: Any

    def describe(self) -> str:
        where = f" on column '{self.column}'" if self.column else ""
        what = f"{self.expectation}{where}"
        if self.unexpected is not None:
            share = f" of {self.rows}" if self.rows is not None else ""
            what += f": {self.unexpected}{share} rows fail"
        if self.examples:
            what += f", e.g. {self.examples[:MAX_EXAMPLES]}"
        elif self.observed is not None:
            what += f": observed {self.observed}"
        return what


@dataclass
class ValidationReport:
    suite: str
    success: bool
    rows: int
    evaluated: int
    failures: list[Failure] = field(default_factory=list)
    json_path: str = ""
    html_path: str = ""

    def summary(self) -> str:
        head = (
            f"suite {self.suite} (v{SUITE_VERSION}): "
            f"{self.evaluated - len(self.failures)}/{self.evaluated} expectations met "
            f"on {self.rows} rows"
        )
        lines = [head, *(f"  - {f.describe()}" for f in self.failures)]
        lines.append(f"  result: {self.json_path}")
        if self.html_path:
            lines.append(f"  data docs: {self.html_path}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failures": [f.describe() for f in self.failures]}


class ValidationFailed(BadInputError):
    def __init__(self, report: ValidationReport):
        super().__init__(report.summary())
        self.report = report


# ---------------------------------------------------------------------------------------
# the suites


def bars_expectations(settings: Settings) -> list[Any]:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[
                *("symbol", "ts", "open", "high", "low", "close", "volume"),
                *(STEP_COLUMN, GAP_COLUMN),
            ],
            exact_match=True,
        ),
        *(
            gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=["float64"])
            for c in ("open", "high", "low", "close", "volume")
        ),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in ("symbol", "ts", "open", "high", "low", "close", "volume")
        ),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, strict_min=True)
            for c in ("open", "high", "low", "close")
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="high", column_B="open", or_equal=True
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="high", column_B="close", or_equal=True
        ),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="open", column_B="low", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="close", column_B="low", or_equal=True
        ),
        gxe.ExpectColumnValuesToBeBetween(column="volume", min_value=0),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "ts"]),
        # Monotonic time per symbol (a step of 0 or less: out of order or repeated) and
        # bounded gaps (more than validation.max_gap_bars expected bars missing in a row).
        gxe.ExpectColumnValuesToBeBetween(column=STEP_COLUMN, min_value=0, strict_min=True),
        gxe.ExpectColumnValuesToBeBetween(
            column=GAP_COLUMN, min_value=0, max_value=settings.validation.max_gap_bars
        ),
    ]


def bars_frame(
    bars: pd.DataFrame,
    previous: dict[str, pd.Timestamp] | None = None,
    calendar: MarketCalendar | None = None,
) -> pd.DataFrame:
    """The batch as the suite sees it: in arrival order, plus the per-symbol time step and
    the bars the calendar expected in between (default calendar: around the clock)."""
    frame = bars.reset_index(drop=True).copy()
    ts = pd.to_datetime(frame["ts"], utc=True)
    before = ts.groupby(frame["symbol"]).shift(1)
    if previous:
        first = before.isna()
        before[first] = frame.loc[first, "symbol"].map(previous)
    before = pd.to_datetime(before, utc=True)
    frame[STEP_COLUMN] = (ts - before).dt.total_seconds()
    if calendar is None:
        bar = pd.Series(ts.sort_values().diff().dropna())
        step = bar[bar > pd.Timedelta(0)].min() if len(bar) else pd.Timedelta(minutes=5)
        calendar = MarketCalendar("always", step.to_pytimedelta())
    # out-of-order rows (a negative step) are the step check's to report
    frame[GAP_COLUMN] = np.where(frame[STEP_COLUMN] > 0, calendar.missing_between(before, ts), 0.0)
    return frame


def features_expectations(
    feature_set: FeatureSet, expected_rows: int, settings: Settings
) -> list[Any]:
    import great_expectations.expectations as gxe

    mostly = 1.0 - settings.validation.max_null_share
    out: list[Any] = [
        gxe.ExpectTableRowCountToEqual(value=expected_rows),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["symbol", "ts"]),
        gxe.ExpectColumnValuesToNotBeNull(column="ts"),
    ]
    for f in feature_set.features:
        out += [
            gxe.ExpectColumnToExist(column=f.name),
            gxe.ExpectColumnValuesToBeInTypeList(column=f.name, type_list=[f.dtype]),
            gxe.ExpectColumnValuesToNotBeNull(column=f.name, mostly=mostly),
            gxe.ExpectColumnValuesToBeBetween(column=f.name, min_value=f.lower, max_value=f.upper),
        ]
    return out


# ---------------------------------------------------------------------------------------
# running a suite


def run_suite(
    settings: Settings, suite_name: str, expectations: list[Any], frame: pd.DataFrame, key: str
) -> ValidationReport:
    """Validate ``frame``; keep the JSON result and the HTML data docs; never raises."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    root = settings.state_dir.resolve() / "validation"
    docs = root / "data_docs"
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # readable task logs
    for site in list(context.get_site_names()):
        context.delete_data_docs_site(site)  # the ephemeral default writes to a temp dir
    context.add_data_docs_site(
        site_name="signalops",
        site_config={
            "class_name": "SiteBuilder",
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(docs),
            },
        },
    )
    asset = context.data_sources.add_pandas("signalops").add_dataframe_asset(suite_name)
    batch = asset.add_batch_definition_whole_dataframe("batch")
    suite = context.suites.add(gx.ExpectationSuite(name=f"{suite_name}.v{SUITE_VERSION}"))
    for expectation in expectations:  # copies: an expectation belongs to one suite
        fresh = copy.copy(expectation)
        fresh.id = None
        suite.add_expectation(fresh)
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=f"{suite_name}.{key}")
    )
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name=f"{suite_name}.checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs")],
            result_format={
                "result_format": "SUMMARY",
                "partial_unexpected_count": 20,
                # examples name their rows, not only the offending values
                "unexpected_index_column_names": [
                    c for c in ("symbol", "ts") if c in frame.columns
                ],
            },
        )
    )
    outcome = checkpoint.run(batch_parameters={"dataframe": frame})
    result = next(iter(outcome.run_results.values()))
    failures = [_failure(r) for r in result.results if not r.success]
    safe_key = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
    json_path = root / suite_name / f"{safe_key}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result.to_json_dict(), indent=1, default=str))
    pages = sorted(
        (docs / "validations").rglob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    report = ValidationReport(
        suite=suite_name,
        success=bool(result.success),
        rows=len(frame),
        evaluated=len(result.results),
        failures=failures,
        json_path=str(json_path),
        html_path=str(pages[0]) if pages else "",
    )
    level = logging.INFO if report.success else logging.ERROR
    log.log(level, "validation %s", report.summary())
    return report


def _failure(r: Any) -> Failure:
    config = r.expectation_config
    kwargs = config.kwargs
    column = kwargs.get("column") or (
        f"{kwargs['column_A']} vs {kwargs['column_B']}"
        if "column_A" in kwargs
        else ", ".join(kwargs["column_list"])
        if "column_list" in kwargs
        else None
    )
    result = r.result or {}
    rows = result.get("partial_unexpected_index_list") or result.get("partial_unexpected_list")
    examples = [_plain(v) for v in (rows or [])[:MAX_EXAMPLES]]
    return Failure(
        expectation=config.type,
        column=column,
        unexpected=result.get("unexpected_count"),
        rows=result.get("element_count"),
        examples=examples,
        observed=_plain(result.get("observed_value")),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def check(report: ValidationReport) -> ValidationReport:
    if not report.success:
        raise ValidationFailed(report)
    return report
