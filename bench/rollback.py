"""Benchmark: how long a rollback takes to reach the traffic.

A sidecar (default settings: polls the registry every ``serving.poll_interval_s`` = 5 s)
serves ``champion``; ``signalops.rollout.canary.rollback`` (what the ``rollback`` DAG runs)
moves the alias; a client sends a request every 20 ms and notes the first response served
by the restored version. Measured ``--rounds`` times, alternating between two registered
versions. Prints each time, the median and the maximum against the target (10 s; the
seeds' SLA was 5 minutes).

    .venv/bin/python bench/rollback.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import free_port, sidecar  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()

    from signalops.config import load_settings
    from signalops.registry import Registry
    from signalops.registry import contracts as c
    from signalops.rollout.canary import rollback
    from signalops.training import retrain as steps
    from tests.conftest import TRAIN_END, TRAIN_START, build_lake

    work = Path(tempfile.mkdtemp(prefix="signalops-bench-rollback-"))
    env_over = {
        "SIGNALOPS_STATE_DIR": str(work / "state"),
        "SIGNALOPS_MARKET__SYMBOLS": "AAA,BBB,CCC",
        "SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES": "100",
        "SIGNALOPS_SERVING__MAX_FEATURE_AGE_S": "1e10",
    }
    settings = load_settings(env=env_over, config_file=None)
    print("setup: synthetic history, two registered versions")
    build_lake(settings, TRAIN_START, TRAIN_END)
    steps.run_all(settings, steps.plan_request(settings, {}, run_key="bench-v1"))
    steps.run_all(settings, steps.plan_request(settings, {"force": True}, run_key="bench-v2"))
    registry = Registry(settings)
    registry.delete_alias(c.ALIAS_CHALLENGER)  # two plain versions to switch between
    spec = (work / "state").rglob("feature_spec.json")
    feature_names = pd.read_json(next(spec), typ="series")["names"]
    body = {"features": {n: 0.01 * i for i, n in enumerate(feature_names)}}

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
    env.update(env_over)
    port = free_port()
    log = work / "sidecar.log"
    times = []
    with (
        sidecar(env, port, work, log) as (base, _),
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        for i in range(args.rounds):
            target = "2" if registry.aliases()[c.ALIAS_CHAMPION] == "1" else "1"
            time.sleep(1.3 * (i % 4))  # land at different points of the poll cycle
            done = rollback(settings, target, reason=f"bench round {i + 1}")
            changed = pd.Timestamp(done["alias_changed_at"]).timestamp()
            while True:
                served = client.post("/v1/signals", json=body).json()["model"]
                if served["version"] == target:
                    break
                time.sleep(0.02)
            times.append(time.time() - changed)
            print(f"  round {i + 1}: v{target} served {times[-1]:.2f} s after the alias moved")
    poll = settings.serving.poll_interval_s
    print(
        f"\nrollback to first response by the restored version, {args.rounds} rounds "
        f"(poll interval {poll:g} s): median {statistics.median(times):.2f} s, "
        f"max {max(times):.2f} s (target 10 s: ratio {max(times) / 10:.2f})"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
