"""The model pool: the ONNX sessions the registry's aliases point at, swapped atomically.

For each served signal the pool holds an immutable :class:`SignalModels` snapshot (the
champion, the challenger when there is one, the canary weight, and the versions kept
loaded after they lost their alias). When an alias moves, the pool downloads the version,
builds the session, checks the feature spec, warms it up, and only then replaces the
snapshot (one reference assignment: a request reads one snapshot and never sees a
half-loaded model). A version that fails to load is not swapped in: the old one keeps
serving and an alert is raised.

Two things tell the pool to look at the registry: a notification on Redis
(``registry.events``, when ``online_store.redis_url`` is set), which swaps within about a
second of the write, and a poller every ``poll_interval_s``, the fallback when a
notification is lost or Redis is away.

Swaps are cheap when the version is already loaded: a challenger promoted to champion is
the same session, and the last ``serving.retained_versions`` versions that lost their
alias stay loaded, so a rollback to the previous champion swaps without a download. The
loaded versions are also what callers may pin (:meth:`ModelPool.get_version`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from signalops.onnx_model import INPUT_NAME, OUTPUT_NAME, load_session, predict_onnx
from signalops.registry import contracts as c

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """A registered version cannot be served (missing file, bad graph, spec mismatch)."""


@dataclass(frozen=True)
class LoadedModel:
    signal: str
    version: str
    session: Any
    feature_names: tuple[str, ...]
    feature_set_version: str
    horizon_bars: int
    loaded_at: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return predict_onnx(self.session, x)

    def describe(self, role: str) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "version": self.version,
            "role": role,
            "feature_set_version": self.feature_set_version,
            "features": list(self.feature_names),
            "horizon_bars": self.horizon_bars,
            "loaded_at": self.loaded_at,
        }


@dataclass(frozen=True)
class SignalModels:
    """What one signal serves right now (replaced whole, never mutated)."""

    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    canary_weight: float = 0.0
    # Loaded versions that hold no alias now, the most recently demoted first: swapped
    # back in without a download, and servable to a caller who pins the version.
    retained: tuple[LoadedModel, ...] = ()

    def versions(self) -> dict[str, LoadedModel]:
        """version -> model of everything loaded: champion, challenger, retained."""
        out = {m.version: m for m in self.retained}
        for model in (self.challenger, self.champion):
            if model is not None:
                out[model.version] = model
        return out


def load_model(signal: str, version: str, folder: Path) -> LoadedModel:
    """Build and check a session from a downloaded version folder."""
    onnx_path, spec_path = folder / c.ONNX_MODEL, folder / c.FEATURE_SPEC
    for path in (onnx_path, spec_path):
        if not path.is_file():
            raise ModelLoadError(f"{signal} v{version}: {path.name} is missing from the version")
    try:
        spec = json.loads(spec_path.read_text())
        names = tuple(spec["names"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{signal} v{version}: unreadable {c.FEATURE_SPEC}: {exc}") from None
    try:
        session = load_session(onnx_path)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{signal} v{version}: onnxruntime cannot load it: {exc}") from None
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    if INPUT_NAME not in inputs or OUTPUT_NAME not in outputs:
        raise ModelLoadError(
            f"{signal} v{version}: graph needs input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
            f"has {sorted(inputs)} -> {sorted(outputs)}"
        )
    width = inputs[INPUT_NAME].shape[-1]
    if isinstance(width, int) and width != len(names):
        raise ModelLoadError(
            f"{signal} v{version}: the graph takes {width} features, the spec names {len(names)}"
        )
    try:  # warm-up: the first run allocates; do it before any request sees the model
        p = predict_onnx(session, np.zeros((1, len(names)), dtype=np.float32))
    except Exception as exc:
        raise ModelLoadError(f"{signal} v{version}: warm-up inference failed: {exc}") from None
    if not (p.shape == (1,) and 0.0 <= float(p[0]) <= 1.0):
        raise ModelLoadError(f"{signal} v{version}: warm-up gave {p!r}, not a probability")
    return LoadedModel(
        signal=signal,
        version=str(version),
        session=session,
        feature_names=names,
        feature_set_version=str(spec.get("feature_set_version", "?")),
        horizon_bars=int(spec.get("label", {}).get("horizon_bars", 0)),
        loaded_at=time.time(),
    )


@dataclass
class PoolStats:
    reloads: int = 0
    reload_failures: int = 0
    downloads: int = 0  # versions fetched from the registry (a reused or retained one is not)
    last_poll: float = 0.0
    last_error: str | None = None
    failed_versions: dict[str, str] = field(default_factory=dict)


class ModelPool:
    """Serves the registry's aliases for each signal; follows them on notifications and by
    polling."""

    def __init__(
        self,
        settings: Any,
        signals: list[str],
        on_alert: Callable[[str, str, str], None] | None = None,
    ):
        self.settings = settings
        self.signals = signals
        self.models: dict[str, SignalModels] = {s: SignalModels() for s in signals}
        self.stats = PoolStats()
        self._on_alert = on_alert
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: Any = None
        self._lock = threading.Lock()  # one refresh at a time (poller, events, admin reload)
        self._cache = Path(tempfile.mkdtemp(prefix="signalops-models-"))
        self._registries: dict[str, Any] = {}

    def _registry(self, signal: str) -> Any:
        from signalops.registry import Registry

        if signal not in self._registries:
            self._registries[signal] = Registry(self.settings, signal)
        return self._registries[signal]

    def refresh(self, signals: Iterable[str] | None = None) -> list[str]:
        """Check the aliases of ``signals`` (default: all) once; swap in what changed.
        Returns what changed."""
        with self._lock:
            changes = []
            for signal in self.signals if signals is None else signals:
                changes += self._refresh_signal(signal)
            self.stats.last_poll = time.time()
            return changes

    def loaded_versions(self, signal: str) -> dict[str, LoadedModel]:
        """version -> model of every version of ``signal`` loaded now (champion, challenger,
        retained), from one snapshot; {} for a signal the pool does not serve."""
        models = self.models.get(signal)
        return models.versions() if models is not None else {}

    def get_version(self, signal: str, version: str) -> LoadedModel | None:
        """A loaded version of ``signal`` (for a caller who pins it), or None when it is not
        loaded: the pool loads what the aliases name, never on a request."""
        return self.loaded_versions(signal).get(str(version))

    def _refresh_signal(self, signal: str) -> list[str]:
        registry = self._registry(signal)
        aliases = registry.aliases()
        try:
            weight = float(registry.model_tags().get(c.CANARY_WEIGHT_TAG, "0")) if aliases else 0.0
        except ValueError:
            weight = 0.0
        current = self.models[signal]
        known = current.versions()
        loaded: dict[str, LoadedModel | None] = {}
        changes = []
        for role in (c.ALIAS_CHAMPION, c.ALIAS_CHALLENGER):
            version = aliases.get(role)
            have = getattr(current, role)
            if version is None:
                loaded[role] = None
                if have is not None:
                    changes.append(f"{signal}@{role}: v{have.version} -> none")
                continue
            if have is not None and have.version == version:
                loaded[role] = have
                continue
            was = f"v{have.version}" if have else "none"
            if version in known:  # a promoted challenger, or a rollback to a retained one
                loaded[role] = known[version]
                changes.append(f"{signal}@{role}: {was} -> v{version} (already loaded)")
                continue
            if self.stats.failed_versions.get(f"{signal}/{version}"):
                loaded[role] = have  # known bad: keep serving the old one, do not retry
                continue
            model = self._load(registry, signal, role, version, was)
            if model is None:  # the old model keeps serving
                loaded[role] = have
                continue
            loaded[role] = known[version] = model
            changes.append(f"{signal}@{role}: {was} -> v{version}")
        champion, challenger = loaded[c.ALIAS_CHAMPION], loaded[c.ALIAS_CHALLENGER]
        retained = self._retain(signal, current, champion, challenger)
        snapshot = SignalModels(
            champion=champion,
            challenger=challenger,
            canary_weight=min(1.0, max(0.0, weight)),
            retained=retained,
        )
        if snapshot != current:
            self.models[signal] = snapshot  # the atomic swap
            if changes:
                self.stats.reloads += len(changes)
                log.info("model pool: %s", "; ".join(changes))
        return changes

    def _load(
        self, registry: Any, signal: str, role: str, version: str, was: str
    ) -> LoadedModel | None:
        """Download and load one version, or None (recorded, logged, alerted once) when it
        cannot be: anything may go wrong, and the old model must keep serving."""
        try:
            folder = registry.download_version(version, self._cache / signal / version)
            self.stats.downloads += 1
            return load_model(signal, version, folder)
        except Exception as exc:
            reason = f"{signal}@{role} v{version} not loaded: {exc}"
            self.stats.reload_failures += 1
            self.stats.last_error = reason
            self.stats.failed_versions[f"{signal}/{version}"] = reason
            log.error("%s; still serving %s", reason, was if was != "none" else "nothing")
            if self._on_alert:
                title = f"signalops sidecar: {signal} v{version} not loaded"
                self._on_alert(title, reason, f"{signal}:v{version}")
            return None

    def _retain(
        self,
        signal: str,
        current: SignalModels,
        champion: LoadedModel | None,
        challenger: LoadedModel | None,
    ) -> tuple[LoadedModel, ...]:
        """The versions to keep loaded without an alias: those that just lost theirs first
        (the previous champion is the likely rollback target), then the ones kept before,
        at most ``serving.retained_versions``. What falls out is dropped with its files."""
        serving = {m.version for m in (champion, challenger) if m is not None}
        candidates: dict[str, LoadedModel] = {}
        for model in (current.champion, current.challenger, *current.retained):
            if model is not None and model.version not in serving:
                candidates.setdefault(model.version, model)
        keep = self.settings.serving.retained_versions
        ordered = list(candidates.values())
        for dropped in ordered[keep:]:
            shutil.rmtree(self._cache / signal / dropped.version, ignore_errors=True)
        return tuple(ordered[:keep])

    def start(self, interval_s: float) -> None:
        """Start the poller and, with a Redis configured, the registry-events listener."""

        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                except Exception as exc:  # registry unreachable: keep serving, try again
                    self.stats.last_error = f"poll failed: {exc}"
                    log.warning("model pool: poll failed: %s", exc)

        self._thread = threading.Thread(target=loop, name="model-pool-poller", daemon=True)
        self._thread.start()
        online = self.settings.online_store
        if online.redis_url:
            from signalops.registry.events import EventListener

            self._listener = EventListener(
                online.redis_url,
                online.key_prefix,
                on_events=self._on_events,
                on_connect=self.refresh,  # catch up on what was written while unsubscribed
                stop=self._stop,
            )
            self._listener.start()

    def _on_events(self, events: list[dict[str, Any]]) -> None:
        signals = [s for s in self.signals if any(e["signal"] == s for e in events)]
        if signals:
            self.refresh(signals)

    @property
    def events_connected(self) -> bool:
        """Whether registry change notifications arrive now (else only polling follows)."""
        return self._listener is not None and bool(self._listener.connected)

    def stop(self) -> None:
        """Stop following the registry; the loaded sessions keep their models in memory,
        so the downloaded files go."""
        self._stop.set()
        for worker in (self._thread, self._listener):
            if worker is not None:
                worker.join(timeout=10)
        shutil.rmtree(self._cache, ignore_errors=True)

    @property
    def ready(self) -> bool:
        return any(m.champion is not None for m in self.models.values())
