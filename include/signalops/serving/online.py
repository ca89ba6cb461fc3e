"""The online features a request by symbol is scored on: the online store (Redis, or the
warehouse database) behind a short in-process cache that also rides out an outage."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from signalops.serving.errors import BadFeatures, StaleFeatures, UnknownSymbol
from signalops.serving.health import Dependency, DependencyDown

if TYPE_CHECKING:
    from signalops.config import Settings
    from signalops.serving.pool import LoadedModel


class OnlineFeatures:
    """Feature vectors by (feature set version, symbol), cached ``feature_cache_ttl_s``."""

    def __init__(self, settings: Settings, dependency: Dependency):
        self.settings = settings
        self.cfg = settings.serving
        self.dependency = dependency
        self._store: Any = None
        self._cache: dict[tuple[str, str], tuple[float, Any]] = {}

    def read(self, model: LoadedModel, symbols: list[str]) -> tuple[np.ndarray, list[Any], bool]:
        """The model's features for each symbol and whether they are stale: with the store
        unreachable, the last vector read for a symbol is served while it is younger than
        ``max_feature_age_s``; a symbol with none gets a 503 that names the store."""
        now = time.time()
        version = model.feature_set_version
        wanted = [s for s in symbols if not self._fresh(version, s, now)]
        stale = False
        if wanted:
            try:
                fetched = self.dependency.call(lambda: self.store.read(version, wanted))
            except DependencyDown:  # what we read before serves, if it is young enough
                if any((version, s) not in self._cache for s in wanted):
                    raise
                stale = True
            else:
                for symbol, vector in fetched.items():
                    self._cache[(version, symbol)] = (now, vector)
        rows, stamps, missing = [], [], []
        for symbol in symbols:
            entry = self._cache.get((version, symbol))
            if entry is None:
                missing.append(symbol)
                continue
            vector = entry[1]
            age = now - vector.ts.timestamp()
            if age > self.cfg.max_feature_age_s:
                if stale:
                    raise DependencyDown(self.dependency)
                raise StaleFeatures(
                    f"online features for {symbol!r} ({version}) are {age:.0f} s old, older "
                    f"than serving.max_feature_age_s {self.cfg.max_feature_age_s:.0f} s"
                )
            try:
                rows.append([vector.values[n] for n in model.feature_names])
            except KeyError as exc:
                raise BadFeatures(f"online features for {symbol!r} lack {exc.args[0]!r}") from None
            stamps.append(vector.ts)
        if missing:
            raise UnknownSymbol(
                f"unknown symbols {missing}: no online features for feature set {version}"
            )
        return np.asarray(rows, dtype=np.float32), stamps, stale

    @property
    def store(self) -> Any:
        if self._store is None:
            from signalops.features.online_store import online_store_from_settings

            self._store = online_store_from_settings(self.settings)
        return self._store

    def _fresh(self, version: str, symbol: str, now: float) -> bool:
        entry = self._cache.get((version, symbol))
        return entry is not None and now - entry[0] < self.cfg.feature_cache_ttl_s

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
