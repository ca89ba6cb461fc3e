"""Benchmark: the hourly drift check against Evidently's data-drift preset.

Reference 1M rows x 40 features, current 250k rows (seeded synthetic frames: normal,
log-normal, uniform, discrete and heavy-tailed columns; a third of the current columns
shifted). In one process, on the same frames:

* ours: ``signalops.drift.severity.assess`` against the reference profile (built once, as
  retrain does, untimed): PSI + KS + Wasserstein per feature and the verdict; median of
  ``--repeats`` runs;
* Evidently 0.7: ``Report([DataDriftPreset(method="psi")]).run(current, reference)``.

Prints both times and the ratio (target: ours >= 20x faster), the time retrain spends on
the profile's null critical values (calibration), and the peak resident memory of the
hourly check alone, measured in a fresh process that loads the profile (JSON) and the
current window (Parquet) and runs the check (target < 1 GB).

Then the **false-alarm rate**: the share of windows drawn from the reference period itself
(contiguous rows, all symbols) that the check calls medium or high, per window size, with
the calibrated profile and with the same profile stripped of its critical values (the
uncalibrated rule of profile version 1), on

* the default synthetic market: five symbols, 5-minute bars, 30 days (the default training
  window), features v1; a fixed model's scores and matured labels included;
* GOOG daily bars 2004-08 .. 2013-03 (the ``backtesting`` package's test data), features
  d1; the same kind of fixed model.

    .venv/bin/python bench/drift.py [--repeats 3] [--null-draws 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

N_FEATURES = 40


def frames(reference_rows: int, current_rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    ref, cur = {}, {}
    for i in range(N_FEATURES):
        name = f"f{i:02d}"
        kind = i % 5
        shift = 0.3 if i % 3 == 0 else 0.0
        if kind == 0:
            ref[name], cur[name] = (
                rng.normal(size=reference_rows),
                rng.normal(shift, 1, current_rows),
            )
        elif kind == 1:
            ref[name] = rng.lognormal(0, 0.5, reference_rows)
            cur[name] = rng.lognormal(shift, 0.5, current_rows)
        elif kind == 2:
            ref[name], cur[name] = (
                rng.uniform(size=reference_rows),
                rng.uniform(shift, 1 + shift, current_rows),
            )
        elif kind == 3:
            ref[name] = rng.integers(0, 20, reference_rows).astype(float)
            cur[name] = rng.integers(0, 20, current_rows) + np.round(shift * 10)
        else:
            ref[name] = rng.standard_t(3, reference_rows)
            cur[name] = rng.standard_t(3, current_rows) * (1 + shift)
    return pd.DataFrame(ref), pd.DataFrame(cur)


def peak_mb() -> float:
    """This process's resident high-water mark. VmHWM, not ru_maxrss: the latter keeps the
    pre-exec peak of a child forked from a big parent (this one holds the 1M-row frame)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) / 1024


def child(work: Path) -> None:
    """The hourly check on its own: load the profile and the window, assess."""
    from signalops.config import Settings
    from signalops.drift.severity import assess

    started = time.perf_counter()
    profile = json.loads((work / "profile.json").read_text())
    current = pd.read_parquet(work / "current.parquet")
    names = list(profile["features"])
    verdict = assess(profile, current, names, Settings().drift)
    print(
        json.dumps(
            {
                "seconds": time.perf_counter() - started,
                "peak_mb": peak_mb(),
                "severity": verdict["severity"],
                "drifted": len(verdict["drifted_features"]),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reference-rows", type=int, default=1_000_000)
    parser.add_argument("--current-rows", type=int, default=250_000)
    parser.add_argument("--null-draws", type=int, default=200, help="windows per size")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from signalops.config import Settings
    from signalops.drift.profile import build_profile
    from signalops.drift.severity import assess

    reference, current = frames(args.reference_rows, args.current_rows)
    names = list(reference.columns)
    # at training time (not part of the check): with and without the null critical values
    started = time.perf_counter()
    build_profile(reference, names, calibrate=False)
    bare_s = time.perf_counter() - started
    started = time.perf_counter()
    profile = build_profile(reference, names)
    profile_s = time.perf_counter() - started
    cfg = Settings().drift
    ours = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        verdict = assess(profile, current, names, cfg)
        ours.append(time.perf_counter() - started)
    print(
        f"ours: {len(reference):,} reference rows (profile) x {len(names)} features vs "
        f"{len(current):,} current rows: {', '.join(f'{t:.2f}' for t in ours)} s; "
        f"severity {verdict['severity']}, {len(verdict['drifted_features'])} drifted"
    )

    from evidently import Report
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(method="psi")]).run(
        current_data=current, reference_data=reference
    )
    evidently_s = time.perf_counter() - started
    drifted = next(
        m["value"]["count"]
        for m in snapshot.dict()["metrics"]
        if m["metric_name"].startswith("DriftedColumnsCount")
    )
    print(f"Evidently DataDriftPreset(method='psi'): {evidently_s:.2f} s; {drifted:.0f} drifted")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "profile.json").write_text(json.dumps(profile))
        current.to_parquet(work / "current.parquet", index=False)
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(work)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        alone = json.loads(out.strip().splitlines()[-1])

    median = statistics.median(ours)
    print(f"\nhourly check, median of {args.repeats}: {median:.2f} s")
    print(f"Evidently preset:                  {evidently_s:.2f} s")
    print(f"ratio (Evidently / ours):          {evidently_s / median:.1f}x (target >= 20x)")
    print(
        f"peak RSS of the check in its own process (load profile + window, assess): "
        f"{alone['peak_mb']:.0f} MB in {alone['seconds']:.2f} s (target < 1024 MB: "
        f"ratio {alone['peak_mb'] / 1024:.2f})"
    )
    sizes = profile["null"]["sizes"]
    print(
        f"reference profile (retrain, {len(reference):,} rows x {len(names)} features): "
        f"{profile_s:.2f} s, of which null critical values {profile_s - bare_s:.2f} s "
        f"({len(sizes)} window sizes {sizes[0]}..{sizes[-1]} rows, "
        f"{profile['null']['blocks']} blocks each)"
    )
    false_alarms(args.null_draws)


def synthetic_reference() -> tuple[pd.DataFrame, list[str], dict]:
    """The default synthetic market, 30 days (the default training window): v1 features."""
    from datetime import timedelta

    from signalops.config import Settings
    from signalops.data.sources import source_from_settings
    from signalops.features.compute import compute_features
    from signalops.features.definitions import get_feature_set

    settings = Settings()
    origin = settings.market.synthetic.origin
    bars = source_from_settings(settings).fetch(origin, origin + timedelta(days=30))
    feature_set = get_feature_set(settings.features.feature_set_version)
    features = compute_features(bars, feature_set, settings.features.horizon_bars)
    return features, feature_set.names, {"settings": settings, "model": ("momentum_24", "rsi_14")}


def goog_reference() -> tuple[pd.DataFrame, list[str], dict]:
    """GOOG daily bars 2004-08 .. 2013-03 from the backtesting package: d1 features."""
    import backtesting

    from signalops.config import Settings
    from signalops.features.compute import compute_features
    from signalops.features.definitions import get_feature_set

    settings = Settings(market={"bar_minutes": 1440})
    from signalops.data.sources import FileSource

    path = Path(backtesting.__file__).parent / "test" / "GOOG.csv"
    bars = FileSource(str(path), "csv").fetch(
        datetime(2000, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC)
    )
    feature_set = get_feature_set(settings.features.feature_set_version)
    features = compute_features(bars, feature_set, settings.features.horizon_bars)
    return features, feature_set.names, {"settings": settings, "model": ("ret_z_20", "rsi_14")}


def false_alarms(draws: int) -> None:
    """Share of windows of the reference period called medium or high, per window size."""
    import logging

    from signalops.drift.false_alarms import null_alarm_rate
    from signalops.drift.profile import build_profile
    from signalops.features.definitions import LABEL_UP

    logging.disable(logging.WARNING)  # the uncalibrated rule logs on every window
    print(f"\nfalse alarms: windows of the reference period itself ({draws} per size)")
    print(f"{'reference':<36} {'rows':>6} {'window rows':>11} {'calibrated':>10} {'v1 rule':>8}")
    for label, load, sizes in (
        ("synthetic 5-min, 5 symbols, 30 days", synthetic_reference, (200, 1440, 7200)),
        ("GOOG daily 2005-08..2013-03", goog_reference, (40, 63, 126, 252, 504)),
    ):
        features, names, spec = load()
        frame = features.dropna(subset=names).sort_values(["ts", "symbol"], kind="stable")
        frame = frame.reset_index(drop=True)
        z = sum((frame[c] - frame[c].mean()) / frame[c].std() for c in spec["model"])
        scores = 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))
        labels = frame[LABEL_UP].to_numpy()
        known = np.isfinite(labels)
        holdout = {"accuracy": float(np.mean((scores[known] > 0.5) == (labels[known] == 1)))}
        profile = build_profile(frame, names, scores=scores, labels=labels)
        bare = {k: v for k, v in profile.items() if k != "null"}
        cfg = spec["settings"].drift
        for n in sizes:
            rates = [
                null_alarm_rate(
                    p,
                    frame,
                    names,
                    cfg,
                    n,
                    draws,
                    seed=n,
                    scores=scores,
                    holdout=holdout,
                    label=LABEL_UP,
                )
                for p in (profile, bare)
            ]
            print(f"{label:<36} {len(frame):>6} {n:>11} {rates[0]:>10.1%} {rates[1]:>8.1%}")


if __name__ == "__main__":
    main()
