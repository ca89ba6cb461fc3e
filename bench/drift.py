"""Benchmark: the hourly drift check against Evidently's data-drift preset.

Reference 1M rows x 40 features, current 250k rows (seeded synthetic frames: normal,
log-normal, uniform, discrete and heavy-tailed columns; a third of the current columns
shifted). In one process, on the same frames:

* ours: ``signalops.drift.monitor.assess`` against the reference profile (built once, as
  retrain does, untimed): PSI + KS + Wasserstein per feature and the verdict; median of
  ``--repeats`` runs;
* Evidently 0.7: ``Report([DataDriftPreset(method="psi")]).run(current, reference)``.

Prints both times and the ratio (target: ours >= 20x faster), and the peak resident memory
of the hourly check alone, measured in a fresh process that loads the profile (JSON) and
the current window (Parquet) and runs the check (target < 1 GB).

    .venv/bin/python bench/drift.py [--repeats 3]
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
    from signalops.config import DriftSettings
    from signalops.drift.monitor import assess

    started = time.perf_counter()
    profile = json.loads((work / "profile.json").read_text())
    current = pd.read_parquet(work / "current.parquet")
    names = list(profile["features"])
    verdict = assess(profile, current, names, DriftSettings())
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
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    from signalops.config import DriftSettings
    from signalops.drift.monitor import assess
    from signalops.drift.profile import build_profile

    reference, current = frames(args.reference_rows, args.current_rows)
    names = list(reference.columns)
    profile = build_profile(reference, names)  # at training time: untimed
    cfg = DriftSettings()
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


if __name__ == "__main__":
    main()
