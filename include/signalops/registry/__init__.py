"""The only door to MLflow: runs, registered model versions, aliases, tags and artifacts.

Embedded default: a SQLite tracking + registry store and local artifacts under the state
dir; ``mlflow.tracking_uri`` in config points it at a server instead. Aliases only, never
stages; aliases resolve with ``get_model_version_by_alias``. Importing this package does
not import MLflow: the client is built when a :class:`Registry` is created.

The writes the sidecar serves from (aliases, the canary-weight tag) are followed by a
notification on Redis when ``online_store.redis_url`` is set (``registry.events``), so
sidecars swap within about a second instead of at their next poll.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signalops.config import Settings
from signalops.registry import events
from signalops.registry.contracts import CANARY_WEIGHT_TAG, FEATURE_SPEC, MODEL_DIR

log = logging.getLogger(__name__)

EXPERIMENT_PREFIX = "signalops"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own tag of a nested run


@dataclass(frozen=True)
class VersionInfo:
    name: str
    version: str
    run_id: str | None
    aliases: tuple[str, ...]
    tags: dict[str, str]
    created_ms: int


def code_version() -> str:
    """The git commit of the code (``-dirty`` when modified), else SIGNALOPS_CODE_VERSION."""
    if os.environ.get("SIGNALOPS_CODE_VERSION"):
        return os.environ["SIGNALOPS_CODE_VERSION"]
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from signalops import __version__

        return __version__


class Registry:
    """MLflow tracking and model registry for one signal (= one registered model)."""

    def __init__(self, settings: Settings, signal: str | None = None):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow import MlflowClient

        self.settings = settings
        self.name = signal or settings.signal_name
        self.tracking_uri = settings.mlflow_tracking_uri
        if settings.mlflow.tracking_uri is None:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        online = settings.online_store
        self._events = (
            events.publisher(online.redis_url, online.key_prefix) if online.redis_url else None
        )

    def _notify(self, change: str, **details: str | None) -> None:
        """Tell the sidecars to look again (after the write: never instead of it)."""
        if self._events is not None:
            self._events.publish(self.name, change, **details)

    # -- runs ---------------------------------------------------------------------------

    def experiment_id(self, kind: str | None = None) -> str:
        """This signal's experiment (training runs), or its ``kind`` one (e.g. ``drift``)."""
        name = f"{EXPERIMENT_PREFIX}/{self.name}" + (f"/{kind}" if kind else "")
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.settings.mlflow.tracking_uri is None:
            location = self.settings.mlflow_artifact_root.as_uri()
        return str(self.client.create_experiment(name, artifact_location=location))

    def find_run(self, tag: str, value: str, kind: str | None = None) -> str | None:
        """The newest run of this signal's experiment whose ``tag`` equals ``value``."""
        runs = self.client.search_runs(
            [self.experiment_id(kind)],
            filter_string=f"tags.`{tag}` = '{value}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return str(runs[0].info.run_id) if runs else None

    def start_run(
        self,
        run_name: str,
        tags: dict[str, str],
        kind: str | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        """A new run; with ``parent_run_id`` a nested run under it (the MLflow UI folds it)."""
        if parent_run_id is not None:
            tags = {**tags, PARENT_RUN_TAG: parent_run_id}
        run = self.client.create_run(self.experiment_id(kind), run_name=run_name, tags=tags)
        return str(run.info.run_id)

    def child_runs(self, parent_run_id: str, kind: str | None = None) -> list[Any]:
        """The nested runs of ``parent_run_id`` (``mlflow.entities.Run``), oldest first."""
        return list(
            self.client.search_runs(
                [self.experiment_id(kind)],
                filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
                order_by=["attributes.start_time ASC"],
                max_results=5000,
            )
        )

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self.client.get_run(run_id).data.params
        # MLflow refuses to change a logged param: a retried task logs only what is new.
        fresh = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in existing]
        for i in range(0, len(fresh), 100):
            self.client.log_batch(run_id, params=fresh[i : i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(batch), 500):
            self.client.log_batch(run_id, metrics=batch[i : i + 500])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self.client.get_run(run_id).data.tags)

    # -- registered model and versions --------------------------------------------------

    def ensure_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self.client.create_registered_model(
                self.name,
                tags={CANARY_WEIGHT_TAG: "0"},
                description=f"signalops signal {self.name}: P(up over the label horizon)",
            )

    def register_version(self, run_id: str, tags: dict[str, str], description: str) -> str:
        """A new version whose artifacts are the run's ``MODEL_DIR`` directory."""
        self.ensure_model()
        version = self.client.create_model_version(
            self.name,
            source=f"runs:/{run_id}/{MODEL_DIR}",
            run_id=run_id,
            tags=tags,
            description=description,
        )
        return str(version.version)

    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            aliases=tuple(mv.aliases or ()),
            tags=dict(mv.tags or {}),
            created_ms=int(mv.creation_timestamp or 0),
        )

    def version(self, version: str) -> VersionInfo:
        return self._info(self.client.get_model_version(self.name, str(version)))

    def by_alias(self, alias: str) -> VersionInfo | None:
        """The version holding ``alias``, or None when no version holds it."""
        from mlflow.exceptions import MlflowException

        try:
            return self._info(self.client.get_model_version_by_alias(self.name, alias))
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def aliases(self) -> dict[str, str]:
        """alias -> version of this signal's registered model ({} before the first version)."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException:
            return {}
        return {alias: str(v) for alias, v in (model.aliases or {}).items()}

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(version))
        log.info("registry: %s@%s -> version %s", self.name, alias, version)
        self._notify(events.ALIAS_SET, alias=alias, version=str(version))

    def delete_alias(self, alias: str) -> None:
        if alias in self.aliases():
            self.client.delete_registered_model_alias(self.name, alias)
            log.info("registry: %s@%s removed", self.name, alias)
            self._notify(events.ALIAS_DELETED, alias=alias)

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, str(value))

    def model_tags(self) -> dict[str, str]:
        return dict(self.client.get_registered_model(self.name).tags or {})

    def model_tag(self, key: str) -> str | None:
        """One tag of the registered model; None without it (or before the first version)."""
        from mlflow.exceptions import MlflowException

        try:
            return self.model_tags().get(key)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def set_model_tag(self, key: str, value: str) -> None:
        self.client.set_registered_model_tag(self.name, key, value)
        if key == CANARY_WEIGHT_TAG:  # the only model tag the sidecar serves from
            self._notify(events.CANARY_WEIGHT, value=value)

    def find_version(self, tag: str, value: str) -> VersionInfo | None:
        """The newest version whose tag ``tag`` equals ``value`` (a scan: versions are few)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException:
            return None
        matches = [self._info(mv) for mv in found if (mv.tags or {}).get(tag) == value]
        return max(matches, key=lambda v: int(v.version)) if matches else None

    def _source(self, version: str) -> tuple[str, str]:
        """(run id, artifact path) of a version registered from ``runs:/<run>/<path>``."""
        mv = self.client.get_model_version(self.name, str(version))
        prefix, source = f"runs:/{mv.run_id}/", str(mv.source or "")
        path = source[len(prefix) :] if source.startswith(prefix) else MODEL_DIR
        return str(mv.run_id), path

    def download_version(self, version: str, dst: Path) -> Path:
        """Download a version's artifact directory (model.onnx, feature_spec.json, ...)."""
        run_id, path = self._source(version)
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, path, str(dst)))

    def download_file(self, version: str, name: str, dst: Path) -> Path:
        """Download one artifact file of a version."""
        run_id, path = self._source(version)
        dst.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, f"{path}/{name}", str(dst)))

    def feature_spec(self, version: str) -> dict[str, Any]:
        """A version's feature spec (``feature_spec.json``: feature set, ordered names)."""
        with tempfile.TemporaryDirectory(prefix="signalops-spec-") as tmp:
            spec: dict[str, Any] = json.loads(
                self.download_file(version, FEATURE_SPEC, Path(tmp)).read_text()
            )
        return spec
