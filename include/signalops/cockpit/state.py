"""What the Signals page shows: the pipeline's state, read from the warehouse and MLflow.

Read only, and cheap: bounded queries on indexed columns, MLflow artifacts fetched once per
run (they never change) and cached in memory. An empty deployment (no warehouse file, no
tables, no MLflow store, no model) yields empty sections, never an error: the page says
"nothing yet". No Airflow import here: the plugin module is the only Airflow-facing part.
The warehouse module (pandas, numpy) and MLflow are imported when a page is built, not when
the plugin is loaded.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import sqlalchemy as sa

from signalops.config import RolloutSettings, Settings, as_utc
from signalops.registry import contracts as c

if TYPE_CHECKING:
    from signalops.warehouse import Warehouse

log = logging.getLogger(__name__)

LIVE_WINDOW = timedelta(days=7)  # live metrics: predictions and outcomes of the last week
DRIFT_POINTS = 200  # newest drift checks on the timeline
ROLLOUTS_SHOWN = 5
ALERTS_SHOWN = 20
EVALUATION_ARTIFACT = f"evaluation/{c.EVALUATION_JSON}"  # where retrain logs it on the run
EVALUATION_MD_ARTIFACT = f"evaluation/{c.EVALUATION_MD}"
SHAP_PLOT_ARTIFACT = f"evaluation/{c.SHAP_PLOT}"
DATA_DOCS_INDEX = Path("validation") / "data_docs" / "index.html"
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def empty(self) -> bool:
        return not (self.versions or self.rollout or self.drift or self.live or self.alerts)


# ---------------------------------------------------------------------------------------
# warehouse


def open_warehouse(settings: Settings) -> Warehouse | None:
    """The warehouse, or None when its SQLite file does not exist yet (never created here)."""
    from signalops.warehouse import Warehouse

    url = sa.make_url(settings.warehouse_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:" or not Path(database).is_file():
            return None
    return Warehouse(settings.warehouse_url)


def _tables(warehouse: Warehouse) -> set[str]:
    return warehouse.tables()


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return as_utc(value).isoformat()


def signal_names(settings: Settings, warehouse: Warehouse | None) -> list[str]:
    """The configured signals, then any other signal the warehouse has rows for."""
    from signalops.warehouse import drift as drift_rows
    from signalops.warehouse import drift_checks_table, rollouts_table
    from signalops.warehouse import rollouts as rollout_rows

    names = list(dict.fromkeys([settings.signal_name, *settings.serving.signals]))
    if warehouse is None:
        return names
    tables = _tables(warehouse)
    found: list[str] = []
    with warehouse.connect() as conn:
        if rollouts_table.name in tables:
            found += rollout_rows.signal_names(conn)
        if drift_checks_table.name in tables:
            found += drift_rows.signal_names(conn)
    for name in found:
        if name not in names:
            names.append(str(name))
    return names


def read_rollouts(
    warehouse: Warehouse, signal: str, cfg: RolloutSettings
) -> tuple[dict[str, Any] | None, list[Any]]:
    """(the active rollout, else the newest, with its last judged guard values and their
    limits; the newest ``ROLLOUTS_SHOWN`` rollouts)."""
    from signalops.warehouse import rollouts as rollout_rows
    from signalops.warehouse import rollouts_table

    if rollouts_table.name not in _tables(warehouse):
        return None, []
    with warehouse.connect() as conn:
        rows = rollout_rows.newest(conn, signal, ROLLOUTS_SHOWN)
        active = rollout_rows.active(conn, signal)
    for row in rows:
        for key in ("started_at", "step_started_at", "updated_at"):
            row[key] = _iso(row[key])
    current = dict(active) if active is not None else (rows[0] if rows else None)
    if current is not None:
        for key in ("started_at", "step_started_at", "updated_at"):
            current[key] = _iso(current[key])
        history = current.get("history") or []
        current["history"] = history if isinstance(history, list) else json.loads(history)
        current["guards"] = next(
            (h["numbers"] for h in reversed(current["history"]) if h.get("numbers")), {}
        )
        current["guard_checks"] = guard_checks(current["guards"], cfg)
    summary = [{k: v for k, v in r.items() if k != "history"} for r in rows]
    return current, summary


def guard_checks(numbers: dict[str, Any], cfg: RolloutSettings) -> list[dict[str, Any]]:
    """The canary's guards as it last judged them (``canary.judge``'s numbers): each value
    next to its limit, ``ok``, ``breach``, ``waiting`` (not enough yet) or ``not judged``."""
    champion, challenger = numbers.get("champion") or {}, numbers.get("challenger") or {}
    ch_p95, champ_p95 = challenger.get("latency_p95_ms"), champion.get("latency_p95_ms")
    latency_limit = (
        champ_p95 * cfg.max_latency_ratio + cfg.latency_slack_ms if champ_p95 is not None else None
    )
    ch_out, champ_out = challenger.get("outcomes"), champion.get("outcomes")
    fewer = min(ch_out, champ_out) if ch_out is not None and champ_out is not None else None
    rows: list[tuple[str, Any, Any, str, bool]] = [
        # (guard, value, limit, comparison, short of it = waiting rather than a breach)
        ("challenger predictions at the step", challenger.get("predictions"),
         cfg.min_predictions, ">=", True),
        ("challenger latency p95 (ms)", ch_p95, latency_limit, "<=", False),
        ("score PSI vs champion", numbers.get("score_psi"), cfg.max_score_psi, "<=", False),
        ("signal agreement (shadow step)", numbers.get("agreement"), cfg.min_agreement, ">=",
         False),
        ("matured outcomes (fewer of the two)", fewer, cfg.min_outcomes, ">=", True),
        ("p(live accuracy worse)", numbers.get("p_accuracy_worse"), cfg.significance, ">=",
         False),
        ("p(live log loss worse)", numbers.get("p_log_loss_worse"), cfg.significance, ">=",
         False),
        ("minutes at the step", numbers.get("step_minutes"), cfg.min_step_minutes, ">=", True),
    ]  # fmt: skip
    out = []
    for guard, value, limit, op, waits in rows:
        if value is None or limit is None:
            status = "not judged"
        elif (value >= limit) if op == ">=" else (value <= limit):
            status = "ok"
        else:
            status = "waiting" if waits else "breach"
        out.append(
            {
                "guard": guard,
                "value": value,
                "limit": f"{op} {limit:g}" if limit is not None else None,
                "status": status,
            }
        )
    return out


def read_drift(
    warehouse: Warehouse, signal: str, points: int = DRIFT_POINTS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the newest ``points`` checks, oldest first, each with its drifted features' names;
    every feature of the newest check, most drifted first)."""
    from signalops.warehouse import drift as drift_rows
    from signalops.warehouse import drift_checks_table, drift_features_table

    tables = _tables(warehouse)
    if drift_checks_table.name not in tables:
        return [], []
    with warehouse.connect() as conn:
        rows = drift_rows.newest_checks(conn, signal, points)
        drifted: dict[tuple[str, Any, Any], list[str]] = {}
        latest: list[dict[str, Any]] = []
        if rows and drift_features_table.name in tables:
            drifted = drift_rows.drifted_features_since(conn, signal, rows[-1]["window_end"])
            newest = rows[0]
            latest = drift_rows.window_features(
                conn,
                signal,
                newest["model_version"],
                newest["window_start"],
                newest["window_end"],
            )
    for row in rows:
        key = (row["model_version"], row["window_start"], row["window_end"])
        row["drifted_features"] = sorted(drifted.get(key, []))
        for name in ("window_start", "window_end", "checked_at"):
            row[name] = _iso(row[name])
    rows.reverse()
    return rows, latest


def read_alerts(warehouse: Warehouse, signal: str | None, limit: int = ALERTS_SHOWN) -> list[Any]:
    """The newest alerts (of one signal: its name in the dedup key or the title)."""
    from signalops.warehouse import alerts as alert_rows
    from signalops.warehouse import alerts_table

    if alerts_table.name not in _tables(warehouse):
        return []
    with warehouse.connect() as conn:
        rows = alert_rows.newest(conn, signal, limit)
    for row in rows:
        for name in ("first_seen", "last_seen", "last_sent"):
            row[name] = _iso(row[name])
    return rows


def read_live(
    settings: Settings,
    warehouse: Warehouse,
    signal: str,
    versions: list[str],
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Live metrics of each version that served in the last ``LIVE_WINDOW`` (and of the
    aliased ``versions``), from ``rollout.outcomes.live_metrics``: the canary's own figures."""
    from signalops.rollout.outcomes import live_metrics
    from signalops.warehouse import outcomes_table, predictions_table
    from signalops.warehouse import predictions as prediction_rows

    tables = _tables(warehouse)
    if predictions_table.name not in tables or outcomes_table.name not in tables:
        return []
    now = now or datetime.now(UTC)
    since = now - LIVE_WINDOW
    with warehouse.connect() as conn:
        served = prediction_rows.versions_since(conn, signal, since)
    out = []
    for version in sorted(set(versions) | set(served), key=_version_key, reverse=True):
        figures = live_metrics(
            settings, warehouse, signal, version, ("champion", "challenger", "shadow"), since, now
        ).as_dict()
        if figures["predictions"] or figures["outcomes"]:
            out.append(figures)
    return out


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


# ---------------------------------------------------------------------------------------
# MLflow


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
                created=_iso(created),
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


# ---------------------------------------------------------------------------------------
# one signal


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
    warehouse = open_warehouse(settings)
    if warehouse is None:
        notes.append("no warehouse yet: nothing has run")
    else:
        try:
            rollout, rollouts = read_rollouts(warehouse, signal, settings.rollout)
            drift, drifted = read_drift(warehouse, signal)
            live = read_live(settings, warehouse, signal, [v.version for v in versions], now)
            alerts = read_alerts(warehouse, signal)
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
