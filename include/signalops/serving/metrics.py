"""Prometheus metrics of the sidecar (one registry per process; with several worker
processes, set PROMETHEUS_MULTIPROC_DIR and they are aggregated on scrape)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)


ERROR_KINDS = ("predict", "input")  # signalops_prediction_errors' kinds


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "signalops_http_requests", "HTTP requests", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "signalops_http_request_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "signalops_errors", "Errors by endpoint and kind", ["endpoint", "kind"], registry=r
        )
        self.predictions = Counter(
            "signalops_predictions", "Rows scored", ["signal", "version", "role"], registry=r
        )
        self.prediction_errors = Counter(
            "signalops_prediction_errors",
            "Rows a model version failed to score, by role (kind: predict = the model raised, "
            "input = the version could not read the request and the champion answered)",
            ["signal", "version", "role", "kind"],
            registry=r,
        )
        self.model_latency = Histogram(
            "signalops_prediction_seconds",
            "Scoring latency by model version and role",
            ["signal", "version", "role"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # With several workers: live processes only; swaps are the same in every worker,
        # buffered and spilled rows add up.
        self.reloads = Gauge(
            "signalops_model_reloads", "Model swaps so far", registry=r, multiprocess_mode="livemax"
        )
        self.log_depth = Gauge(
            "signalops_prediction_log_depth",
            "Rows buffered (server and writer process)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.dead_letters = Gauge(
            "signalops_prediction_log_dead_letters",
            "Rows the database refused for their content, moved to the dead-letter file",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.spilled = Gauge(
            "signalops_prediction_log_spilled",
            "Rows spilled to disk",
            registry=r,
            multiprocess_mode="livesum",
        )

        self.breaker_open = Gauge(
            "signalops_risk_breaker_open",
            "1 while the risk guard's circuit breaker blocks BUY/SELL for the day",
            registry=r,
            multiprocess_mode="livemax",
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached: label lookup is on every request's path."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def zero_errors(self) -> None:
        """Every version that scored has its error series, at 0 until one fails: rates and
        ratios see a zero, not an absent series (called at scrape time, off the hot path)."""
        scored = [labels for (mid, labels) in list(self._children) if mid == id(self.predictions)]
        for labels in scored:
            for kind in ERROR_KINDS:
                self.child(self.prediction_errors, *labels, kind)

    def close(self) -> None:
        """A worker that stops takes its live gauges with it."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
