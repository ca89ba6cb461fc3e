"""Explanations per prediction: TreeSHAP contributions of the sidecar's logged predictions.

The prediction log stores no feature values, only their hash, so each prediction's features
are read again from the offline store at its symbol and features' bar time (as the outcomes
join reads bars) and checked against the logged ``features_hash`` (blake2b of the float32
row in the model's column order, as ``serving.scoring`` computes it). The native XGBoost
model that retrain logged with the version (``model.ubj``, the model the ONNX graph was
exported from) gives exact TreeSHAP values with ``pred_contribs``: one contribution per
feature plus the bias (the base value), in log-odds, summing to the model's margin.

Each prediction gets one row in ``prediction_explanations``: the ``explain.top_k`` largest
contributions by absolute value with the feature's value, the sum of the others (``rest``),
the base value and the margin (base_value + sum(contributions) + rest = margin), or, with no
numbers, why not (``status``: no symbol or bar time, no offline row, a hash that differs, no
native model). Runs are incremental (only predictions without a row), ordered (oldest
first), bounded (``explain.batch_rows``) and idempotent (upserts on the prediction's key).

XGBoost is imported here, never in the sidecar: this runs as a batch task of the outcomes DAG.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from signalops.config import Settings
from signalops.registry import contracts as c
from signalops.serving.predlog import features_hash
from signalops.warehouse import Warehouse, to_utc_series
from signalops.warehouse import explanations as rows_db
from signalops.warehouse.explanations import (
    EXPLAINED,
    HASH_MISMATCH,
    KEY,
    NO_BAR_TIME,
    NO_FEATURES,
    NO_MODEL,
    STATUSES,
)

log = logging.getLogger(__name__)

# The registry's answers for a version (or an artifact) that is not there.
MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
# The booster and the ONNX graph served agree within the retrain's parity gate (1e-5 by
# default) on the same float32 rows; far beyond it, the served model is not this booster.
PROBABILITY_TOLERANCE = 1e-3


class ModelUnavailable(Exception):
    """A version's native model cannot explain its predictions (gone, or not the served one)."""


@dataclass(frozen=True)
class NativeModel:
    """A version's XGBoost booster and the ordered features it was trained on."""

    signal: str
    version: str
    booster: Any  # xgboost.Booster
    feature_names: tuple[str, ...]
    feature_set_version: str


@dataclass(frozen=True)
class Contributions:
    """TreeSHAP of a batch, in log-odds: ``base + values.sum(axis=1) == margin``."""

    values: np.ndarray  # [n, features]
    base: np.ndarray  # [n] the bias column: the expected margin
    margin: np.ndarray  # [n] the booster's own output margin


def native_model(signal: str, version: str, booster: Any, spec: Mapping[str, Any]) -> NativeModel:
    """A booster with its feature spec, checked: it must take as many features as the spec
    names (else it is not the model the version serves)."""
    names = tuple(str(n) for n in spec["names"])
    width = int(booster.num_features())
    if width != len(names):
        raise ModelUnavailable(
            f"{signal} v{version}: {c.NATIVE_MODEL} takes {width} features, "
            f"{c.FEATURE_SPEC} names {len(names)}"
        )
    return NativeModel(signal, version, booster, names, str(spec["feature_set_version"]))


def load_native_model(registry: Any, version: str, nthread: int = 1) -> NativeModel:
    """The version's native model from the registry (``model.ubj`` + ``feature_spec.json``);
    ``ModelUnavailable`` when the version or the file is gone."""
    import xgboost as xgb

    signal = str(registry.name)
    with tempfile.TemporaryDirectory(prefix="signalops-explain-") as tmp:
        try:
            model_path = registry.download_file(version, c.NATIVE_MODEL, Path(tmp) / "model")
            spec_path = registry.download_file(version, c.FEATURE_SPEC, Path(tmp) / "spec")
        except Exception as exc:
            if getattr(exc, "error_code", None) in MISSING_CODES:
                raise ModelUnavailable(
                    f"{signal} v{version}: not in the registry, or without {c.NATIVE_MODEL}: {exc}"
                ) from exc
            raise  # the registry is unreachable (or worse): the task is retried
        booster = xgb.Booster()
        booster.load_model(str(model_path))
        spec = json.loads(Path(spec_path).read_text())
    booster.set_param({"nthread": nthread})
    return native_model(signal, version, booster, spec)


def contributions(booster: Any, x: np.ndarray) -> Contributions:
    """Exact TreeSHAP of each row of ``x`` (the model's column order) and its margin."""
    import xgboost as xgb

    dmatrix = xgb.DMatrix(np.asarray(x, dtype=np.float32), feature_names=booster.feature_names)
    contribs = np.asarray(booster.predict(dmatrix, pred_contribs=True), dtype=np.float64)
    margin = np.asarray(booster.predict(dmatrix, output_margin=True), dtype=np.float64)
    return Contributions(values=contribs[:, :-1], base=contribs[:, -1], margin=margin)


def top_contributions(
    names: Sequence[str], values: np.ndarray, contribs: np.ndarray, k: int
) -> tuple[list[dict[str, Any]], float]:
    """The ``k`` largest contributions of one row by absolute value (ties: column order),
    each with its feature's value, and the sum of the others."""
    order = np.argsort(-np.abs(contribs), kind="stable")
    top = [
        {"feature": names[i], "value": float(values[i]), "contribution": float(contribs[i])}
        for i in order[:k]
    ]
    return top, float(contribs[order[k:]].sum())


def sigmoid(margin: float) -> float:
    """P(up) of a margin (the binary:logistic link)."""
    return 1.0 / (1.0 + math.exp(-margin))


# -- the batch step ------------------------------------------------------------------------


def explain_predictions(
    settings: Settings, batch: int | None = None, now: datetime | None = None
) -> dict[str, Any]:
    """Explain the oldest logged predictions that have no explanation yet (at most
    ``explain.batch_rows``, none older than ``explain.lookback_days``). Returns counts by
    status, the predictions read, and the largest |P(up) of the margin - logged P(up)|."""
    cfg = settings.explain
    now = now or datetime.now(UTC)
    since = now - timedelta(days=cfg.lookback_days)
    counts: Counter[str] = Counter({s: 0 for s in STATUSES})
    worst = 0.0
    with Warehouse(settings.warehouse_url) as warehouse:
        warehouse.create_all()
        with warehouse.connect() as conn:
            preds = rows_db.unexplained(conn, since, batch or cfg.batch_rows)
        if not preds.empty:
            preds["ts"] = to_utc_series(preds["ts"])
            preds["features_ts"] = to_utc_series(preds["features_ts"])
            out, worst = explain_frame(settings, preds, now)
            counts.update(r["status"] for r in out)
            with warehouse.begin() as conn:
                rows_db.store(conn, out)
    result: dict[str, Any] = {
        "predictions": len(preds),
        **counts,
        "max_probability_error": round(worst, 8),
    }
    log.info(
        "explanations: %d of %d predictions explained (top %d); skipped: %d without a bar "
        "time, %d without an offline row, %d whose features hash differs, %d without a "
        "native model; largest |P(margin) - logged P| %.2g",
        counts[EXPLAINED], len(preds), cfg.top_k, counts[NO_BAR_TIME], counts[NO_FEATURES],
        counts[HASH_MISMATCH], counts[NO_MODEL], worst,
    )  # fmt: skip
    if worst > PROBABILITY_TOLERANCE:
        log.warning(
            "explanations: the native models disagree with the logged probabilities by up to "
            "%.3g: the ONNX graph served may not be the booster logged with the version",
            worst,
        )
    return result


def explain_frame(
    settings: Settings, preds: pd.DataFrame, now: datetime
) -> tuple[list[dict[str, Any]], float]:
    """Explanation rows for ``preds`` (``warehouse.explanations.UNEXPLAINED_COLUMNS``, UTC
    timestamps), one per prediction, and the largest |P(margin) - logged P|."""
    from signalops.features.offline_store import OfflineStore
    from signalops.registry import Registry

    store = OfflineStore(settings.lake_dir)
    registries: dict[str, Any] = {}
    out: list[dict[str, Any]] = []
    worst = 0.0
    dated = preds["symbol"].notna() & preds["features_ts"].notna()
    out += [_row(r, NO_BAR_TIME, now) for r in preds[~dated].to_dict("records")]
    for (signal, version), group in preds[dated].groupby(["signal_name", "model_version"]):
        records = group.to_dict("records")
        if signal not in registries:
            registries[signal] = Registry(settings, str(signal))
        try:
            model = load_native_model(registries[signal], str(version), settings.training.nthread)
        except ModelUnavailable as exc:
            log.warning("explanations: %s: %d predictions not explained", exc, len(records))
            out += [_row(r, NO_MODEL, now) for r in records]
            continue
        rows, error = explain_group(model, group, store, settings.explain.top_k, now)
        out += rows
        worst = max(worst, error)
    return out, worst


def explain_group(
    model: NativeModel, group: pd.DataFrame, store: Any, k: int, now: datetime
) -> tuple[list[dict[str, Any]], float]:
    """Explanation rows of one version's predictions (all with a symbol and a bar time)."""
    names = list(model.feature_names)
    x, found = read_features(store, model, group)
    records = group.to_dict("records")
    status = [EXPLAINED if ok else NO_FEATURES for ok in found]
    for i, record in enumerate(records):
        if found[i] and features_hash(x[i]) != record["features_hash"]:
            status[i] = HASH_MISMATCH
    good = [i for i, s in enumerate(status) if s == EXPLAINED]
    out = [_row(r, s, now) for r, s in zip(records, status, strict=True) if s != EXPLAINED]
    if not good:
        return out, 0.0
    shap = contributions(model.booster, x[good])
    worst = 0.0
    for j, i in enumerate(good):
        top, rest = top_contributions(names, x[i], shap.values[j], k)
        margin = float(shap.margin[j])
        worst = max(worst, abs(sigmoid(margin) - float(records[i]["probability"])))
        out.append(
            _row(
                records[i],
                EXPLAINED,
                now,
                base_value=float(shap.base[j]),
                margin=margin,
                rest=rest,
                contributions=top,
            )
        )
    return out, worst


def read_features(
    store: Any, model: NativeModel, group: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """The model's features (float32, its column order) of each prediction in ``group``
    from the offline store at (symbol, features_ts), and which were found."""
    names = list(model.feature_names)
    start = group["features_ts"].min().to_pydatetime()
    end = group["features_ts"].max().to_pydatetime() + timedelta(microseconds=1)
    frame = store.read(
        model.feature_set_version,
        sorted(group["symbol"].unique().tolist()),
        start=start,
        end=end,
        columns=names,
    )
    if frame.empty or not set(names) <= set(frame.columns):
        return np.zeros((len(group), len(names)), dtype=np.float32), np.zeros(len(group), bool)
    frame = frame.assign(ts=to_utc_series(frame["ts"])).rename(columns={"ts": "features_ts"})
    keys = group[["symbol", "features_ts"]].reset_index(drop=True)
    merged = keys.merge(frame, on=["symbol", "features_ts"], how="left", indicator=True)
    found = (merged["_merge"] == "both").to_numpy()
    x = merged[names].to_numpy(dtype=np.float64, na_value=np.nan).astype(np.float32)
    return x, found


def _row(record: Mapping[str, Any], status: str, now: datetime, **numbers: Any) -> dict[str, Any]:
    features_ts = record.get("features_ts")
    return {
        **{k: record[k] for k in KEY},
        "model_version": record["model_version"],
        "symbol": record["symbol"] if isinstance(record["symbol"], str) else None,
        "ts": pd.Timestamp(record["ts"]).to_pydatetime(),
        "features_ts": None if pd.isna(features_ts) else pd.Timestamp(features_ts).to_pydatetime(),
        "status": status,
        "base_value": numbers.get("base_value"),
        "margin": numbers.get("margin"),
        "rest": numbers.get("rest"),
        "contributions": numbers.get("contributions"),
        "explained_at": now,
    }


# -- reading them back ---------------------------------------------------------------------


def format_explanation(row: Mapping[str, Any]) -> str:
    """One explanation row as a few lines of text (the CLI's output)."""
    head = (
        f"request {row['request_id']} row {row['row_index']}: {row['signal_name']} "
        f"{row['role']} v{row['model_version']}, {row.get('symbol') or '-'} at "
        f"{row.get('features_ts') or '-'}, predicted {row['ts']}"
    )
    if row["status"] != EXPLAINED:
        return f"{head}\n  not explained: {row['status']}"
    margin = float(row["margin"])
    lines = [
        head,
        f"  margin {margin:+.4f} (P(up) {sigmoid(margin):.4f}) = base value "
        f"{float(row['base_value']):+.4f} + the contributions below",
    ]
    top = row["contributions"] or []
    width = max([len(str(t["feature"])) for t in top] + [6])
    lines += [
        f"  {t['feature']!s:<{width}} {float(t['contribution']):+.4f}  "
        f"(value {float(t['value']):.6g})"
        for t in top
    ]
    lines.append(f"  {'others':<{width}} {float(row['rest']):+.4f}")
    return "\n".join(lines)
