"""The end of a retrain run: register what passed the gate, close what did not.

``register`` packages every artifact of the run into a new model version
(:func:`signalops.registry.packaging.package_model`, plus ``best_params.json`` when the run
tuned) and sets the alias the gate chose:
``challenger`` (at canary weight 0), or ``champion`` for the first model. ``reject``
closes the MLflow run of a challenger the gate turned down. ``outcome_alert`` is the
Slack message for either ending.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from signalops.alerts import Alert
from signalops.config import Settings
from signalops.errors import BadInputError
from signalops.registry import contracts as c
from signalops.training.rundir import (
    StepResult,
    load_booster,
    load_dataset,
    read_request,
    read_state,
    save_state,
)


def register(settings: Settings, run_dir: Path) -> StepResult:
    """Register the version (all artifacts) and set its alias: challenger, or champion first."""
    from signalops.registry import Registry
    from signalops.registry.packaging import package_model

    state = read_state(run_dir)
    run_id, action = state["mlflow_run_id"], state.get("action")
    parity_file = run_dir / c.PARITY_JSON
    parity = json.loads(parity_file.read_text()) if parity_file.exists() else None
    if parity is None or not parity["passed"]:  # never register what failed parity
        failures = parity["failures"] if parity else ["no parity check on record"]
        raise BadInputError(f"register {run_dir.name}: parity failed: {failures}")
    if action not in (c.ALIAS_CHAMPION, c.ALIAS_CHALLENGER):
        raise BadInputError(f"register {run_dir.name}: the gate did not pass (action {action!r})")
    registry = Registry(settings)
    dataset, booster = load_dataset(run_dir), load_booster(run_dir)
    run_tags = registry.run_tags(run_id)
    version = run_tags.get(c.TAG_MODEL_VERSION)
    if version is None:  # a retried register does not create a second version
        folder = package_model(run_dir, booster, len(dataset.feature_names))
        if (run_dir / c.BEST_PARAMS).exists():  # the version says how it was tuned
            shutil.copy2(run_dir / c.BEST_PARAMS, folder / c.BEST_PARAMS)
        registry.log_artifacts(run_id, folder, c.MODEL_DIR)
        version = registry.register_version(
            run_id,
            tags={
                c.TAG_SNAPSHOT: dataset.snapshot_hash,
                c.TAG_FEATURE_SET: dataset.feature_set_version,
                c.TAG_TRAINING_KEY: state["training_key"],
                c.TAG_PARITY_ERROR: f"{parity['max_abs_error']:.3g}",
                c.TAG_CODE_VERSION: run_tags.get(c.TAG_CODE_VERSION, "?"),
                c.TAG_GATE: "passed",
                c.TAG_RUN_KEY: read_request(run_dir).run_key,
                c.TAG_PARAMS_SOURCE: run_tags.get(c.TAG_PARAMS_SOURCE, "training.xgboost"),
            },
            description=(run_dir / c.EVALUATION_MD).read_text()[:5000],
        )
        registry.set_tags(run_id, {c.TAG_MODEL_VERSION: version})
    previous = registry.aliases()
    registry.set_alias(action, version)
    if action == c.ALIAS_CHALLENGER:
        # A new challenger starts at zero traffic: the rollout moves the weight from here.
        registry.set_model_tag(c.CANARY_WEIGHT_TAG, "0")
    registry.end_run(run_id, "FINISHED")
    save_state(run_dir, model_version=version)
    replaced = previous.get(action)
    summary = (
        f"registered {registry.name} version {version} with alias '{action}'"
        + (f" (replacing version {replaced})" if replaced and replaced != version else "")
        + f"; MLflow run {run_id}"
    )
    return StepResult(str(run_dir), run_id, summary, {"version": version, "alias": action})


def reject(settings: Settings, run_dir: Path) -> StepResult:
    """Close the run of a challenger the gate rejected: nothing is registered."""
    from signalops.registry import Registry

    run_id = read_state(run_dir)["mlflow_run_id"]
    report = json.loads((run_dir / c.EVALUATION_JSON).read_text())
    reasons = report["decision"]["reasons"]
    registry = Registry(settings)
    registry.set_tags(run_id, {c.TAG_STATUS_REASON: "gate rejected: " + "; ".join(reasons)})
    registry.end_run(run_id, "FINISHED")
    return StepResult(
        str(run_dir),
        run_id,
        "not registered, the gate rejected it: " + "; ".join(reasons),
        {"reasons": reasons},
    )


def outcome_alert(settings: Settings, result: StepResult, registered: bool) -> Alert:
    """The Slack message for the end of a retrain run."""
    if registered:
        return Alert(
            title=f"signalops: {settings.signal_name} v{result.figures['version']} registered",
            text=result.summary,
            severity="info",
            fields={"alias": str(result.figures["alias"]), "mlflow run": str(result.mlflow_run_id)},
        )
    return Alert(
        title=f"signalops: {settings.signal_name} challenger rejected by the gate",
        text=result.summary,
        severity="warning",
        fields={"mlflow run": str(result.mlflow_run_id)},
    )
