"""Scoring a request once its protocol has parsed it: route to a model (or take the pinned
version), read its features, predict, apply the risk guard, log every row, queue the shadow
challenger. Ensembles score their members the same way and decide once on the blend."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from signalops.serving.errors import TooLarge
from signalops.serving.health import DependencyDown
from signalops.serving.inputs import InputError
from signalops.serving.predlog import PredictionRow, features_hash
from signalops.serving.risk import RiskDecision
from signalops.serving.routing import route

if TYPE_CHECKING:
    from signalops.config import EnsembleSettings
    from signalops.serving.pool import LoadedModel
    from signalops.serving.sidecar import Sidecar

# A protocol's inputs for one model: (the feature matrix in its column order, bar times).
Provider = Callable[["LoadedModel"], tuple[np.ndarray, "list[Any] | None"]]


@dataclass
class Scored:
    """One model's answer to a request."""

    model: LoadedModel
    role: str
    p: np.ndarray  # P(up) per row
    final: list[str]  # BUY/SELL/HOLD after the risk guard
    decisions: list[RiskDecision]
    stamps: list[Any] | None
    volatilities: list[float] | None  # the risk guard's sizing input, where the model has it


@dataclass
class Blended:
    """An ensemble's answer: the blend and what each member said."""

    members: list[dict[str, Any]]
    p: np.ndarray
    final: list[str]
    decisions: list[RiskDecision]
    stamps: list[Any] | None


class Scorer:
    def __init__(self, svc: Sidecar):
        self.svc = svc
        self.cfg = svc.cfg
        self.metrics = svc.metrics

    def serve(
        self,
        signal: str,
        provide: Provider,
        symbols: list[str | None],
        key: str,
        request_id: str,
        started: float,
        apply_risk: bool = True,
        pinned: str | None = None,
    ) -> Scored:
        """Route (or take the pinned version), read features for the model, score, guard,
        log (+ shadow)."""
        svc, metrics = self.svc, self.metrics
        models = svc.models_of(signal)
        champion = models.champion
        assert champion is not None
        if pinned is not None:
            model = svc.pinned_model(signal, pinned)
            role = "champion" if model is champion else "pinned"
            shadow = None
        else:
            model, role, shadow = route(models, symbols[0] or "", key)
        try:
            x, stamps = provide(model)
        except InputError:
            if model is champion or pinned is not None:
                raise
            # The challenger cannot read this input (another feature set): champion answers.
            failed = metrics.child(metrics.prediction_errors, signal, model.version, role, "input")
            lost = (model.version, role)
            model, role = champion, "champion"
            x, stamps = provide(model)
            failed.inc(len(x))
            svc.failures.record(signal, *lost, "input", len(x))
        if len(x) > self.cfg.max_batch_rows:
            raise TooLarge(f"{len(x)} rows exceed serving.max_batch_rows {self.cfg.max_batch_rows}")
        try:
            p = model.predict(x)
        except Exception:
            metrics.child(metrics.prediction_errors, signal, model.version, role, "predict").inc(
                len(x)
            )
            svc.failures.record(signal, model.version, role, "predict", len(x))
            raise
        volatilities = self.volatilities(model, x)
        final, decisions = self.decide(p, apply_risk, symbols, volatilities)
        latency_ms = (time.perf_counter() - started) * 1000
        self.log_rows(
            request_id, model, role, x, p, symbols, final, [d.as_text() for d in decisions],
            latency_ms, stamps,
        )  # fmt: skip
        metrics.child(metrics.predictions, signal, model.version, role).inc(len(p))
        metrics.child(metrics.model_latency, signal, model.version, role).observe(latency_ms / 1000)
        if shadow is not None and self.cfg.shadow:
            try:
                same = shadow.feature_names == model.feature_names
                xs, stamps_s = (x, stamps) if same else provide(shadow)
            except InputError as exc:
                metrics.child(metrics.errors, "shadow", exc.kind).inc()
                metrics.child(
                    metrics.prediction_errors, signal, shadow.version, "shadow", "input"
                ).inc(len(x))
                svc.failures.record(signal, shadow.version, "shadow", "input", len(x))
            else:
                # Off the request path: batched with other requests' shadow rows.
                svc.shadow.submit(shadow, xs, request_id, symbols, stamps_s)
        return Scored(model, role, p, final, decisions, stamps, volatilities)

    def blend(
        self,
        ensemble: EnsembleSettings,
        provide: Provider,
        symbols: list[str | None],
        key: str,
        request_id: str,
        started: float,
    ) -> Blended:
        """Weighted average (or weighted up-vote share) of the members' P(up); one risk check."""
        members: list[dict[str, Any]] = []
        weighted: np.ndarray | None = None
        total = 0.0
        stamps: list[Any] | None = None
        volatilities: list[float] | None = None
        for member, weight in ensemble.members.items():
            scored = self.serve(member, provide, symbols, key, request_id, started, False)
            vote = scored.p if ensemble.method == "average" else (scored.p > 0.5).astype(float)
            weighted = vote * weight if weighted is None else weighted + vote * weight
            total += weight
            stamps = stamps or scored.stamps
            volatilities = volatilities or scored.volatilities
            members.append(
                {
                    "name": member,
                    "version": scored.model.version,
                    "role": scored.role,
                    "weight": weight,
                    "probability": [float(v) for v in scored.p],
                }
            )
        assert weighted is not None
        p = weighted / total
        final, decisions = self.decide(p, True, symbols, volatilities)
        return Blended(members, p, final, decisions, stamps)

    def volatilities(self, model: LoadedModel, x: np.ndarray) -> list[float] | None:
        """Each row's volatility feature (``risk.volatility_feature``), for sizing."""
        name = self.cfg.risk.volatility_feature
        if self.cfg.risk.volatility_target is None or name not in model.feature_names:
            return None
        return [float(v) for v in x[:, model.feature_names.index(name)]]

    def decide(
        self,
        p: np.ndarray,
        apply_risk: bool = True,
        symbols: list[str | None] | None = None,
        volatilities: list[float] | None = None,
    ) -> tuple[list[str], list[RiskDecision]]:
        """BUY/SELL/HOLD per row, through the risk guard (a blocked signal becomes HOLD;
        one let through carries its suggested size)."""
        label = self.cfg.label
        values = p.tolist()
        labels = [label(v) for v in values]
        if not apply_risk:
            return labels, [RiskDecision(True, "ensemble member")] * len(p)
        confidences = [v if v >= 0.5 else 1 - v for v in values]  # max(p, 1 - p)
        risk = self.svc.risk
        try:  # the check reads a snapshot: the state's own sync says when Redis is back
            decisions = self.svc.dependencies["risk_state"].call(
                lambda: risk.check(labels, confidences, datetime.now(UTC), symbols, volatilities),
                mark_up=False,
            )
        except DependencyDown:  # fail closed: with the limits unknown, nothing trades
            blocked = RiskDecision(False, "risk state unavailable")
            decisions = [RiskDecision(True, "ok") if s == "HOLD" else blocked for s in labels]
        final = [s if d.allowed else "HOLD" for s, d in zip(labels, decisions, strict=True)]
        return final, decisions

    def log_rows(
        self,
        request_id: str,
        model: LoadedModel,
        role: str,
        x: np.ndarray,
        p: np.ndarray,
        symbols: list[str | None],
        signals: list[str],
        decisions: list[str],
        latency_ms: float,
        stamps: list[Any] | None,
    ) -> None:
        now = datetime.now(UTC)
        self.svc.predlog.submit(
            [
                PredictionRow(
                    request_id=request_id,
                    row_index=i,
                    signal_name=model.signal,
                    role=role,
                    ts=now,
                    symbol=symbols[i],
                    model_version=model.version,
                    features_hash=features_hash(x[i]),
                    features_ts=stamps[i] if stamps else None,
                    probability=float(p[i]),
                    signal=signals[i],
                    risk_decision=decisions[i],
                    latency_ms=latency_ms,
                )
                for i in range(len(p))
            ]
        )
