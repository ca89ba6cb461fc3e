"""The Slack alert of a drift check that must alert, and its de-duplication key.

``drift_alert`` builds the message (severity, reasons, top drifted features, what to do;
a link to the signal's page, where the Evidently report is), the ledger key (one per
window, so a retried alert task sends it once) and the re-alert window. Whether a check
alerts at all is ``signalops.drift.records.persist``'s decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from signalops.config import Settings
from signalops.drift.records import check_key


def drift_alert(
    settings: Settings, summary: Mapping[str, Any], run_id: str | None = None
) -> tuple[Any, str, timedelta]:
    """The Slack alert of a check that must alert (``DriftCheck.as_dict()``, the DAG's
    summary), its dedup key (one per window: a retried alert task sends it once) and window
    (``drift.realert_hours``). It links to the signal's page, where the Evidently report
    is; the run's page is a field. Never a file path."""
    from signalops.alerts import Alert

    top = ", ".join(f"{f['feature']} {f['psi']:.2f}" for f in summary["top_features"][:5])
    fields = {
        "window": f"{summary['window_start']} .. {summary['window_end']}",
        "drifted": f"{len(summary['drifted_features'])} features ({summary['share_drifted']:.0%})",
    }
    if run_id:
        fields["run"] = settings.airflow_run_url("drift_monitor", run_id)
    alert = Alert(
        title=f"signalops: {summary['severity'].upper()} drift on {summary['signal']} "
        f"v{summary['model_version']}",
        text="\n".join(
            [
                *summary["reasons"],
                f"Top features (PSI): {top or 'none'}",
                "",
                *summary["recommendations"],
            ]
        ),
        severity="error" if summary["severity"] == "high" else "warning",
        fields=fields,
        link=settings.signal_page_url(summary["signal"]),
    )
    k = check_key(summary)
    span = f"{k['window_start']:%Y%m%dT%H%M}-{k['window_end']:%Y%m%dT%H%M}"
    key = f"{k['signal_name']}:v{k['model_version']}:{span}"
    return alert, key, timedelta(hours=settings.drift.realert_hours)
