"""The Signals page's registry reads: the aliased model versions, their evaluations, links.

For each of champion, challenger and previous champion (``read_versions``): the version,
its tags, the retrain gate's evaluation report (``evaluation.json``, logged on the training
run: fetched once per run, it never changes, and cached in memory) and links to MLflow's
pages, the run's artifacts and the Airflow run that trained it. An MLflow store that does
not exist yet is never created, and an unreachable one becomes a note, not an error.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from signalops.cockpit.state_warehouse import iso
from signalops.config import Settings
from signalops.registry import contracts as c

log = logging.getLogger(__name__)

EVALUATION_ARTIFACT = f"evaluation/{c.EVALUATION_JSON}"  # where retrain logs it on the run
EVALUATION_MD_ARTIFACT = f"evaluation/{c.EVALUATION_MD}"
SHAP_PLOT_ARTIFACT = f"evaluation/{c.SHAP_PLOT}"
AIRFLOW_RUN_ID = re.compile(r"^(manual|scheduled|asset_triggered|backfill|dataset_triggered)__")


@dataclass
class VersionView:
    """One aliased model version and its evaluation summary."""

    alias: str
    version: str
    run_id: str | None
    experiment_id: str | None
    created: str | None
    tags: dict[str, str]
    evaluation: dict[str, Any] | None  # the gate's checks and each model's holdout metrics
    links: dict[str, str] = field(default_factory=dict)  # label -> URL


def mlflow_store_exists(settings: Settings) -> bool:
    """False for an embedded SQLite store that has not been created yet (never create it)."""
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).is_file()
    return True


_evaluations: dict[str, dict[str, Any] | None] = {}  # run id -> evaluation.json (immutable)
_lock = threading.Lock()


def _evaluation(client: Any, run_id: str) -> dict[str, Any] | None:
    with _lock:
        if run_id in _evaluations:
            return _evaluations[run_id]
    try:
        with tempfile.TemporaryDirectory(prefix="signalops-cockpit-") as tmp:
            path = client.download_artifacts(run_id, EVALUATION_ARTIFACT, tmp)
            report: dict[str, Any] | None = json.loads(Path(path).read_text())
    except Exception as exc:  # no such artifact, an unreachable store
        log.warning("signals page: no evaluation report for run %s: %s", run_id, exc)
        return None
    with _lock:
        _evaluations[run_id] = report
    return report


def evaluation_summary(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """The gate's rules (status, detail, numbers) and each model's holdout figures."""
    if not report:
        return None
    decision = report.get("decision") or {}
    return {
        "primary_metric": report.get("primary_metric"),
        "passed": decision.get("passed"),
        "action": decision.get("action"),
        "reasons": decision.get("reasons") or [],
        "rules": [
            {
                "name": name,
                "status": check.get("status"),
                "passed": check.get("passed"),
                "detail": check.get("detail"),
                "threshold": check.get("threshold"),
                "setting": check.get("setting"),
                "numbers": check.get("numbers") or {},
            }
            for name, check in (decision.get("checks") or {}).items()
        ],
        "models": {
            role: {"version": m.get("version"), **m.get("ml", {}), **m.get("trading", {})}
            for role, m in (report.get("models") or {}).items()
        },
        "holdout": report.get("holdout"),
        "comparison": report.get("comparison"),
    }


def read_versions(settings: Settings, signal: str) -> tuple[list[VersionView], list[str]]:
    """champion, challenger and previous champion with their evaluations (and notes)."""
    if not mlflow_store_exists(settings):
        return [], ["no MLflow store yet: no model has been trained"]
    from signalops.registry import Registry

    notes: list[str] = []
    try:
        registry = Registry(settings, signal)
        aliases = registry.aliases()
    except Exception as exc:  # an unreachable server: say so, show the rest
        return [], [f"MLflow registry not readable at {settings.mlflow_tracking_uri}: {exc}"]
    views = []
    for alias in c.ALIASES:
        if alias not in aliases:
            continue
        info = registry.version(aliases[alias])
        experiment_id = None
        if info.run_id:
            try:
                experiment_id = str(registry.client.get_run(info.run_id).info.experiment_id)
            except Exception as exc:
                notes.append(f"run {info.run_id} of version {info.version}: {exc}")
        report = _evaluation(registry.client, info.run_id) if info.run_id else None
        created = datetime.fromtimestamp(info.created_ms / 1000, UTC) if info.created_ms else None
        views.append(
            VersionView(
                alias=alias,
                version=info.version,
                run_id=info.run_id,
                experiment_id=experiment_id,
                created=iso(created),
                tags=info.tags,
                evaluation=evaluation_summary(report),
                links=version_links(settings, signal, info.version, info.run_id, experiment_id)
                | _airflow_link(settings, info.tags),
            )
        )
    return views, notes


def _airflow_link(settings: Settings, tags: dict[str, str]) -> dict[str, str]:
    """The retrain DAG run that trained the version (none for CLI runs)."""
    run_key = tags.get(c.TAG_RUN_KEY, "")
    if not AIRFLOW_RUN_ID.match(run_key):
        return {}
    return {"retrain run (Airflow)": settings.airflow_run_url("retrain", run_key)}


def version_links(
    settings: Settings, signal: str, version: str, run_id: str | None, experiment_id: str | None
) -> dict[str, str]:
    """MLflow's pages for the version and its run; the run's evaluation.md and SHAP plot."""
    ui = settings.mlflow_ui_url
    links = {"model version (MLflow)": f"{ui}/#/models/{quote(signal, safe='')}/versions/{version}"}
    if run_id:
        if experiment_id:
            links["training run (MLflow)"] = f"{ui}/#/experiments/{experiment_id}/runs/{run_id}"
        links["evaluation.md"] = artifact_url(settings, run_id, EVALUATION_MD_ARTIFACT)
        links["SHAP plot"] = artifact_url(settings, run_id, SHAP_PLOT_ARTIFACT)
    return links


def artifact_url(settings: Settings, run_id: str, path: str) -> str:
    return f"{settings.signals_url}artifacts/runs/{run_id}/{quote(path)}"
