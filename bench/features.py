"""Benchmark: the full feature set on 1M bars (10 symbols x 100k 5-minute bars).

Anchor (issue "Foundation"): 1M bars in under 10 s on a 2-core machine, under 2 GB peak.
Each repeat runs in a fresh process: bars are generated first, then the peak-RSS mark is
reset (Linux ``/proc/self/clear_refs``) so the reported peak is the process high-water
mark while computing (bars, libraries and features all resident). Prints the median of
the repeats and its ratio to the anchor (< 1.0 is inside the target).

    .venv/bin/python bench/features.py [--repeats 3] [--bars 1000000] [--symbols 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

ANCHOR_SECONDS = 10.0
ANCHOR_PEAK_MB = 2048.0


def _vm(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(n_bars: int, n_symbols: int, version: str) -> dict:
    from datetime import UTC, datetime, timedelta

    from signalops.data.synthetic import SyntheticSource
    from signalops.features.compute import compute_features
    from signalops.features.definitions import get_feature_set

    per_symbol = n_bars // n_symbols
    origin = datetime(2026, 1, 1, tzinfo=UTC)
    source = SyntheticSource(
        symbols=tuple(f"SYM{i:02d}" for i in range(n_symbols)),
        bar=timedelta(minutes=5),
        seed=7,
        origin=origin,
    )
    bars = source.fetch(origin, origin + timedelta(minutes=5 * per_symbol))
    feature_set = get_feature_set(version)
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset the peak-RSS mark to the current RSS
    rss_before = _vm("VmRSS")
    started = time.perf_counter()
    features = compute_features(bars, feature_set, horizon_bars=12)
    seconds = time.perf_counter() - started
    return {
        "bars": len(bars),
        "rows_out": len(features),
        "features": len(feature_set.names),
        "seconds": seconds,
        "peak_mb": _vm("VmHWM"),
        "rss_before_mb": rss_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--version", default="v1")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.bars, args.symbols, args.version)))
        return

    runs = []
    for i in range(args.repeats):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--bars",
                str(args.bars),
                "--symbols",
                str(args.symbols),
                "--version",
                args.version,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        run = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(run)
        print(f"  run {i + 1}: {run['seconds']:.2f} s, peak {run['peak_mb']:.0f} MB", flush=True)
    seconds = statistics.median(r["seconds"] for r in runs)
    peak = statistics.median(r["peak_mb"] for r in runs)
    first = runs[0]
    print(
        f"features {args.version}: {first['bars']:,} bars x {first['features']} features "
        f"({args.symbols} symbols) -> {first['rows_out']:,} rows, median of {args.repeats}"
    )
    print(
        f"  time      {seconds:6.2f} s   {first['bars'] / seconds:12,.0f} bars/s   "
        f"ratio to anchor {ANCHOR_SECONDS:.0f} s: {seconds / ANCHOR_SECONDS:.3f}"
    )
    print(
        f"  peak RSS  {peak:6.0f} MB   (before compute {first['rss_before_mb']:.0f} MB)   "
        f"ratio to anchor {ANCHOR_PEAK_MB:.0f} MB: {peak / ANCHOR_PEAK_MB:.3f}"
    )


if __name__ == "__main__":
    main()
