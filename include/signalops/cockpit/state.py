"""What the Signals page shows: the pipeline's state, read from the warehouse and MLflow.

``signal_state`` gathers one signal's page (``overview``: every signal's) from the two
readers, ``state_warehouse`` (rollouts, drift checks, live metrics, alerts, explanations) and
``state_registry`` (the aliased model versions and their evaluations), and adds the links
to the reports under the state dir. Read only, and cheap: bounded queries on indexed
columns, MLflow artifacts fetched once per run and cached in memory. An empty deployment
(no warehouse file, no tables, no MLflow store, no model) yields empty sections, never an
error: the page says "nothing yet". No Airflow import here: the plugin module is the only
Airflow-facing part.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from signalops.cockpit.state_registry import VersionView, read_versions
from signalops.cockpit.state_warehouse import (
    open_warehouse,
    read_alerts,
    read_drift,
    read_explanations,
    read_live,
    read_rollouts,
    signal_names,
)
from signalops.config import Settings

DATA_DOCS_INDEX = Path("validation") / "data_docs" / "index.html"


@dataclass
class SignalState:
    """Everything the page shows for one signal (JSON-serializable via ``as_dict``)."""

    name: str
    generated_at: str
    versions: list[VersionView]
    rollout: dict[str, Any] | None  # the active rollout, else the newest one
    rollouts: list[dict[str, Any]]  # newest first (without their history)
    drift: list[dict[str, Any]]  # oldest first: the timeline
    drifted_features: list[dict[str, Any]]  # of the newest check
    live: list[dict[str, Any]]  # per model version
    alerts: list[dict[str, Any]]
    links: dict[str, str]
    notes: list[str]  # what could not be read, in words
    # the champion's newest explained predictions, newest first (top contributions)
    explanations: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return not (self.versions or self.rollout or self.drift or self.live or self.alerts)


def state_file_url(settings: Settings, path: str | Path) -> str | None:
    """The page's URL of a file under the state dir (None: outside it, or missing)."""
    root = settings.state_dir.resolve()
    try:
        relative = Path(path).resolve().relative_to(root)
    except ValueError:
        return None
    if not (root / relative).is_file():
        return None
    return f"{settings.signals_url}artifacts/state/{quote(relative.as_posix())}"


def signal_state(settings: Settings, signal: str, *, registry: bool = True) -> SignalState:
    """Everything the page shows for ``signal`` (``registry=False``: warehouse only)."""
    now = datetime.now(UTC)
    versions, notes = read_versions(settings, signal) if registry else ([], [])
    rollout: dict[str, Any] | None = None
    rollouts: list[dict[str, Any]] = []
    drift: list[dict[str, Any]] = []
    drifted: list[dict[str, Any]] = []
    live: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    explanations: list[dict[str, Any]] = []
    warehouse = open_warehouse(settings)
    if warehouse is None:
        notes.append("no warehouse yet: nothing has run")
    else:
        try:
            rollout, rollouts = read_rollouts(warehouse, signal, settings.rollout)
            drift, drifted = read_drift(warehouse, signal)
            live = read_live(settings, warehouse, signal, [v.version for v in versions], now)
            alerts = read_alerts(warehouse, signal)
            champion = next((v.version for v in versions if v.alias == "champion"), None)
            explanations = read_explanations(warehouse, signal, champion)
        except sa.exc.OperationalError as exc:
            notes.append(f"warehouse not readable: {exc.orig}")
        finally:
            warehouse.dispose()
    for check in drift:
        check["report_url"] = state_file_url(settings, check["report_path"] or "")
    links = {"Signals page": settings.signal_page_url(signal)}
    docs = state_file_url(settings, settings.state_dir.resolve() / DATA_DOCS_INDEX)
    if docs:
        links["data docs (Great Expectations)"] = docs
    newest_report = next((d["report_url"] for d in reversed(drift) if d["report_url"]), None)
    if newest_report:
        links["newest drift report (Evidently)"] = newest_report
    return SignalState(
        name=signal,
        generated_at=now.isoformat(),
        versions=versions,
        rollout=rollout,
        rollouts=rollouts,
        drift=drift,
        drifted_features=drifted,
        live=live,
        alerts=alerts,
        links=links,
        notes=notes,
        explanations=explanations,
    )


def overview(settings: Settings, *, registry: bool = True) -> list[SignalState]:
    """Every signal's state (the overview page)."""
    warehouse = open_warehouse(settings)
    try:
        names = signal_names(settings, warehouse)
    except sa.exc.OperationalError:
        names = list(dict.fromkeys([settings.signal_name, *settings.serving.signals]))
    finally:
        if warehouse is not None:
            warehouse.dispose()
    return [signal_state(settings, name, registry=registry) for name in names]
