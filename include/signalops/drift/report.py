"""The drift check for people: an Evidently report (HTML), kept under the state dir and
logged to MLflow (experiment ``signalops/<signal>/drift``, one run per checked window).

Evidently's ``DataDriftPreset(method="psi")`` runs on a bounded sample of each side
(``drift.report_sample_rows``): the reference side is the champion's training window read
back from the offline store, or, when those days are gone, the profile's per-column samples
(column drift compares marginals, which is what those keep).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import Settings
from signalops.drift.check import DriftCheck
from signalops.drift.monitor import Champion

log = logging.getLogger(__name__)

WINDOW_TAG = "signalops.drift_window"


def reference_sample(settings: Settings, champion: Champion, rows: int) -> pd.DataFrame:
    from signalops.features.offline_store import OfflineStore

    names = list(champion.spec["names"])
    profile = champion.profile
    frame = pd.DataFrame()
    if profile.get("start") and profile.get("end"):
        frame = OfflineStore(settings.lake_dir).read(
            champion.spec["feature_set_version"],
            start=pd.Timestamp(profile["start"]).to_pydatetime(),
            end=(pd.Timestamp(profile["end"]) + pd.Timedelta(microseconds=1)).to_pydatetime(),
            columns=names,
        )
    if len(frame) >= min(rows, 100):
        return frame[names].sample(min(rows, len(frame)), random_state=0).reset_index(drop=True)
    rng = np.random.default_rng(0)  # per-column samples, each shuffled on its own
    columns = {n: rng.permutation(profile["features"][n]["sample"]) for n in names}
    size = min(len(v) for v in columns.values())
    return pd.DataFrame({n: v[:size] for n, v in columns.items()})


def write_report(
    settings: Settings, check: DriftCheck, current: pd.DataFrame, champion: Champion
) -> Path:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    names = list(champion.spec["names"])
    rows = settings.drift.report_sample_rows
    cur = current[names].sample(min(rows, len(current)), random_state=0).reset_index(drop=True)
    ref = reference_sample(settings, champion, rows)
    snapshot = Report([DataDriftPreset(method="psi")]).run(current_data=cur, reference_data=ref)
    # the window's start and end: windows of different lengths that end together differ
    first, last = (
        pd.Timestamp(t).strftime("%Y%m%dT%H%M%S") for t in (check.window_start, check.window_end)
    )
    path = (
        settings.state_dir.resolve()
        / "drift"
        / "reports"
        / check.signal
        / f"v{check.model_version}_{first}_{last}.html"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.html")
    snapshot.save_html(str(tmp))
    tmp.replace(path)
    log.info(
        "drift: Evidently report (%d reference, %d current rows): %s", len(ref), len(cur), path
    )
    return path


def log_to_mlflow(settings: Settings, check: DriftCheck, report: Path) -> str:
    """One MLflow run per (model version, window start and end): a rerun of the window
    reuses it."""
    import json
    import tempfile

    from signalops.registry import Registry

    registry = Registry(settings, check.signal)
    window = f"v{check.model_version}/{check.window_start}/{check.window_end}"
    run_id = registry.find_run(WINDOW_TAG, window, kind="drift") or registry.start_run(
        f"drift v{check.model_version} {check.window_start} .. {check.window_end}",
        {WINDOW_TAG: window, "signalops.model_version": check.model_version},
        kind="drift",
    )
    metrics = {
        "share_drifted": check.share_drifted,
        "rows": float(check.rows),
        "window_bars": float(check.window_bars),
        "severity_rank": float(("none", "low", "medium", "high").index(check.severity)),
    }
    for name in ("prediction_psi", "accuracy", "accuracy_drop", "brier"):
        value = getattr(check, name)
        if value is not None:
            metrics[name] = float(value)
    for f in check.features:
        metrics[f"psi.{f['feature']}"] = float(f["psi"])
    registry.log_metrics(run_id, metrics)
    registry.set_tags(run_id, {"signalops.severity": check.severity})
    registry.log_artifact(run_id, report, "drift")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "drift_check.json"
        path.write_text(json.dumps(check.as_dict(), indent=1, default=str))
        registry.log_artifact(run_id, path, "drift")
    registry.end_run(run_id)
    return run_id


def report_check(settings: Settings, summary: dict[str, Any]) -> dict[str, Any]:
    """The drift DAG's ``report`` step: the Evidently report of a finished check (its
    window read again, against the champion's reference), recorded on the check's row and
    logged to MLflow. Returns the summary with ``report`` and ``mlflow_run_id``."""
    from signalops.drift.monitor import load_champion, read_window
    from signalops.drift.records import set_report_path
    from signalops.windows import parse_ts

    champion = load_champion(settings, summary["signal"], settings.state_dir / "drift" / "champion")
    if champion is None:
        raise RuntimeError(f"{summary['signal']}: the champion changed between check and report")
    end = parse_ts(summary["window_end"], "window_end")
    names = list(champion.spec["names"])
    current = read_window(settings, champion.spec, end, summary["window_bars"], names)
    check = DriftCheck(**{**summary, "features": []})
    path = write_report(settings, check, current, champion)
    set_report_path(settings, check, str(path))
    run_id = log_to_mlflow(settings, check, path)
    return {**summary, "report": str(path), "mlflow_run_id": run_id}
