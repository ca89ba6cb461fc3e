"""Every cross-DAG Airflow Asset, declared once so that producer and consumer never drift.

Names are namespaced ``signalops/<what>``. Producers attach ``extra`` describing what
landed (at least ``start`` and ``end`` of the window, ISO-8601), which consumers read from
their triggering events to know which interval to process.
"""

from __future__ import annotations

from airflow.sdk import Asset

BARS = Asset("signalops/bars")
"""New or corrected bars landed in the warehouse (market_data -> features)."""

FEATURES = Asset("signalops/features")
"""Offline-store days rewritten for a feature-set version (features -> validation, drift)."""

DRIFT_DETECTED = Asset("signalops/drift_detected")
"""The drift monitor found high-severity drift (drift_monitor -> retrain)."""

CHALLENGER_REGISTERED = Asset("signalops/challenger_registered")
"""A model version got the ``challenger`` alias (retrain -> canary)."""
