"""Benchmark: the whole retrain path on 1M labeled rows x the full feature set (v2, 28).

Anchor (issue "retrain"): the bare ``xgboost.train`` call with the same parameters
(``training.xgboost``, its ``num_boost_round`` without early stopping) on the same rows, in
the same process. Target: whole path <= 2x the bare fit; peak memory < 3 GB.

The whole path is what the DAG's tasks run, in one process: assemble (read the offline
store, label, hash) -> walk-forward CV with early stopping + final fit -> ONNX export +
parity on the holdout -> evaluation (metrics, bootstrap, SHAP, reference profile) ->
MLflow run + registered version with every artifact (SQLite store in a temp dir).
Setup (synthetic bars, features written to a temp offline store) and library imports are
not timed. The peak is the process high-water mark (``VmHWM``) from just before the timed
path, reset through ``/proc/self/clear_refs``.

Tuning (``--tune-trials N``, default 5, 0: not measured; first repeat only): the tune
step's study (``training.study.run_study``, every trial a nested MLflow run) on the same rows
after the path, as trials per minute, and a complete trial's time against the train step's
own walk-forward CV: trial 0 is that very CV (the run's parameters), on fold matrices the
study builds once and reuses, so ~1x (later trials' times follow their parameters).

    .venv/bin/python bench/retrain.py [--rows 1000000] [--symbols 10] [--repeats 1]
                                      [--tune-trials 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ANCHOR_RATIO = 2.0
ANCHOR_PEAK_MB = 3 * 1024.0


def _vm(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _build_lake(state: Path, rows: int, n_symbols: int, version: str) -> dict:
    """Synthetic bars -> features -> offline store, day files as the features DAG writes."""
    from datetime import UTC, datetime, timedelta

    import pandas as pd

    from signalops.data.synthetic import SyntheticSource
    from signalops.features.compute import compute_features
    from signalops.features.definitions import get_feature_set
    from signalops.features.offline_store import OfflineStore

    feature_set = get_feature_set(version)
    per_symbol = rows // n_symbols + feature_set.warmup + 12
    origin = datetime(2025, 1, 1, tzinfo=UTC)
    symbols = tuple(f"SYM{i:02d}" for i in range(n_symbols))
    source = SyntheticSource(symbols=symbols, bar=timedelta(minutes=5), seed=7, origin=origin)
    end = origin + timedelta(minutes=5 * per_symbol)
    features = compute_features(source.fetch(origin, end), feature_set, horizon_bars=12)
    store = OfflineStore(state / "lake")
    store.write_spec(feature_set, 12)
    day = features["ts"].dt.floor("D")
    for d, part in features.groupby(day, sort=True):
        store.write_day(version, pd.Timestamp(d).date(), part)
    return {
        "symbols": list(symbols),
        "start": origin.isoformat(),
        "end": end.isoformat(),
        "labeled_rows": int(features["label_up"].notna().sum()),
    }


def _tuning(
    settings: Any, dataset: Any, request: Any, parent_run_id: str, cv_seconds: float
) -> dict:
    """The tune step's study on the run's rows: trials per minute, a trial vs the CV."""
    import statistics

    from signalops.registry import Registry
    from signalops.training.study import MlflowTrials, run_study

    metric = settings.tuning.metric or settings.evaluation.primary_metric
    recorder = MlflowTrials(Registry(settings), parent_run_id, request.run_key, metric)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    started = time.perf_counter()
    study = run_study(dataset, settings, request.params, request.tune_trials, recorder=recorder)
    seconds = time.perf_counter() - started
    complete = [t["seconds"] for t in study.trials if t["state"] == "complete"]
    return {
        "trials": len(study.trials),
        "complete": study.count("complete"),
        "pruned": study.count("pruned"),
        "seconds": seconds,
        "trials_per_minute": 60 * len(study.trials) / seconds,
        "median_complete_trial_seconds": statistics.median(complete),
        "trial0_seconds": study.trials[0]["seconds"],
        "trial_seconds": [round(t["seconds"], 2) for t in study.trials],
        "train_step_cv_seconds": cv_seconds,
        "best_trial": study.best_trial,
        "metric": metric,
        "value": study.value,
        "incumbent_value": study.incumbent_value,
        "peak_mb": _vm("VmHWM"),
    }


def child(rows: int, n_symbols: int, version: str, tune_trials: int = 0) -> dict:
    import mlflow  # noqa: F401  (imports are not part of the timed path)
    import numpy as np
    import xgboost as xgb

    from signalops.config import load_settings
    from signalops.training import explain, onnx_export  # noqa: F401
    from signalops.training import retrain as steps
    from signalops.training.rundir import TRAIN_JSON, load_dataset
    from signalops.training.train import booster_params, onnx_feature_names

    with tempfile.TemporaryDirectory(prefix="signalops-bench-") as tmp:
        state = Path(tmp) / "state"
        lake = _build_lake(state, rows, n_symbols, version)
        settings = load_settings(
            env={
                "SIGNALOPS_STATE_DIR": str(state),
                "SIGNALOPS_MARKET__SYMBOLS": ",".join(lake["symbols"]),
                "SIGNALOPS_FEATURES__FEATURE_SET_VERSION": version,
            },
            config_file=None,
        )
        request = steps.plan_request(
            settings,
            {"start": lake["start"], "end": lake["end"], "force": True},
            run_key="bench",
        )
        from signalops.registry import Registry

        Registry(settings).experiment_id()  # create the MLflow store (schema migration)

        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        rss_before = _vm("VmRSS")
        started = time.perf_counter()
        timings: dict[str, float] = {}
        results = steps.run_all(settings, request, timings)
        total = time.perf_counter() - started
        peak = _vm("VmHWM")
        run_dir = Path(results["assemble"].run_dir)
        trained = json.loads((run_dir / TRAIN_JSON).read_text())

        # The anchor: one bare xgboost.train, same parameters, same rows, same process.
        dataset = load_dataset(run_dir)
        x, y = dataset.x, dataset.y
        positives = float(y.sum())
        params = booster_params(settings.training, request.params, (len(y) - positives) / positives)
        dtrain = xgb.DMatrix(x, label=y, feature_names=onnx_feature_names(x.shape[1]))
        started = time.perf_counter()
        xgb.train(params, dtrain, num_boost_round=request.params.num_boost_round)
        bare = time.perf_counter() - started
        del dtrain, x, y
        steps_seconds = {k: v for k, v in trained["seconds"].items()}
        tuning = None
        if tune_trials:
            tuning = _tuning(
                settings,
                dataset,
                steps.plan_request(
                    settings,
                    {"start": lake["start"], "end": lake["end"], "tune_trials": tune_trials},
                    run_key="bench-tune",
                ),
                str(results["assemble"].mlflow_run_id),
                trained["seconds"]["cv_seconds"],
            )
        return {
            "rows": len(dataset.frame),
            "features": len(dataset.feature_names),
            "total_seconds": total,
            "bare_fit_seconds": bare,
            "bare_rounds": request.params.num_boost_round,
            "kept_trees": trained["n_trees"],
            "cv_folds": len(trained["folds"]),
            "train_seconds": steps_seconds,
            "step_seconds": timings,
            "registered": "register" in results,
            "peak_mb": peak,
            "rss_before_mb": rss_before,
            "nthread": settings.training.nthread,
            "np": np.__version__,
            "tuning": tuning,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--version", default="v2")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tune-trials", type=int, default=5, help="0: no tuning measurement")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.rows, args.symbols, args.version, args.tune_trials)))
        return

    runs = []
    for i in range(args.repeats):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--rows",
                str(args.rows),
                "--symbols",
                str(args.symbols),
                "--version",
                args.version,
                "--tune-trials",
                str(args.tune_trials if i == 0 else 0),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"benchmark child failed:\n{proc.stderr[-3000:]}")
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(
            f"run {i + 1}: {run['rows']} rows x {run['features']} features: whole path "
            f"{run['total_seconds']:.1f} s, bare xgboost.train ({run['bare_rounds']} rounds) "
            f"{run['bare_fit_seconds']:.1f} s, "
            f"ratio {run['total_seconds'] / run['bare_fit_seconds']:.2f}; "
            f"kept {run['kept_trees']} trees; peak {run['peak_mb']:.0f} MB"
        )
        tune = run["tuning"]
        if tune:
            print(
                f"tuning: {tune['trials']} trials ({tune['complete']} complete, "
                f"{tune['pruned']} pruned) in {tune['seconds']:.1f} s on {run['rows']} rows: "
                f"{tune['trials_per_minute']:.2f} trials/minute; trial 0 (the run's parameters) "
                f"{tune['trial0_seconds']:.1f} s vs the train step's CV "
                f"{tune['train_step_cv_seconds']:.1f} s (ratio "
                f"{tune['trial0_seconds'] / tune['train_step_cv_seconds']:.2f}), median "
                f"complete trial {tune['median_complete_trial_seconds']:.1f} s; "
                f"best trial {tune['best_trial']}: CV {tune['metric']} {tune['value']:.4f} vs "
                f"{tune['incumbent_value']:.4f} (trial 0); peak {tune['peak_mb']:.0f} MB"
            )
    total = statistics.median(r["total_seconds"] for r in runs)
    bare = statistics.median(r["bare_fit_seconds"] for r in runs)
    peak = statistics.median(r["peak_mb"] for r in runs)
    ratio = total / bare
    print(
        json.dumps(
            {
                "rows": runs[0]["rows"],
                "features": runs[0]["features"],
                "repeats": len(runs),
                "median_total_seconds": round(total, 2),
                "median_bare_fit_seconds": round(bare, 2),
                "ratio_total_to_bare": round(ratio, 3),
                "ratio_to_anchor_2x": round(ratio / ANCHOR_RATIO, 3),
                "median_peak_mb": round(peak, 1),
                "peak_ratio_to_3gb": round(peak / ANCHOR_PEAK_MB, 3),
                "kept_trees": [r["kept_trees"] for r in runs],
                "train_step_seconds": runs[-1]["train_seconds"],
                "step_seconds": runs[-1]["step_seconds"],
                "tuning": runs[0]["tuning"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
