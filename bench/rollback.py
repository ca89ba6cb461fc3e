"""Benchmark: how long a rollback takes to reach the traffic, with and without notifications.

Two sidecars serve ``champion`` from the same registry side by side: one follows registry
change notifications on Redis (``online_store.redis_url``, a key prefix of its own, polling
every ``serving.poll_interval_s`` = 5 s as the fallback), the other polls only (no Redis:
the embedded default, the anchor). ``signalops.rollout.canary.rollback`` (what the
``rollback`` DAG runs, publishing the notification after the alias write) moves the alias;
a client per sidecar, already asking when the alias moves, sends a request every 20 ms and
notes the first response served by the restored version. Measured ``--rounds`` times,
alternating between two registered versions (from the second round on, the target is a
version the pool kept loaded). Prints each time, the median and the maximum of both, the
notification median against the target (1 s) and the ratio of the two medians.

    .venv/bin/python bench/rollback.py [--rounds 6] [--redis-url redis://localhost:6379/0]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serve import free_port, sidecar  # noqa: E402

TARGET_S = 1.0
MODES = ("events", "polling")


def first_served(
    client: httpx.Client, body: dict[str, Any], target: str, out: dict[str, float], mode: str
) -> None:
    """Ask every 20 ms until ``target`` answers; note when (time.time()) under ``mode``."""
    while client.post("/v1/signals", json=body).json()["model"]["version"] != target:
        time.sleep(0.02)
    out[mode] = time.time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--redis-url", default="redis://localhost:6379/0")
    args = parser.parse_args()

    import redis

    from signalops.config import load_settings
    from signalops.registry import Registry
    from signalops.registry import contracts as c
    from signalops.rollout.canary import rollback
    from signalops.training import retrain as steps
    from tests.conftest import TRAIN_END, TRAIN_START, build_lake

    work = Path(tempfile.mkdtemp(prefix="signalops-bench-rollback-"))
    prefix = f"signalops-bench-{uuid.uuid4().hex[:8]}"
    env_over = {
        "SIGNALOPS_STATE_DIR": str(work / "state"),
        "SIGNALOPS_MARKET__SYMBOLS": "AAA,BBB,CCC",
        "SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES": "100",
        "SIGNALOPS_SERVING__MAX_FEATURE_AGE_S": "1e10",
    }
    with_events = {
        "SIGNALOPS_ONLINE_STORE__REDIS_URL": args.redis_url,
        "SIGNALOPS_ONLINE_STORE__KEY_PREFIX": prefix,
    }
    # The rollback publishes the notification, so it runs with the Redis settings too.
    settings = load_settings(env={**env_over, **with_events}, config_file=None)
    print("setup: synthetic history, two registered versions")
    build_lake(settings, TRAIN_START, TRAIN_END)
    steps.run_all(settings, steps.plan_request(settings, {}, run_key="bench-v1"))
    steps.run_all(settings, steps.plan_request(settings, {"force": True}, run_key="bench-v2"))
    registry = Registry(settings)
    registry.delete_alias(c.ALIAS_CHALLENGER)  # two plain versions to switch between
    spec = (work / "state").rglob("feature_spec.json")
    feature_names = pd.read_json(next(spec), typ="series")["names"]
    body = {"features": {n: 0.01 * i for i, n in enumerate(feature_names)}}

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
    envs = {
        "events": {**base_env, **env_over, **with_events},
        # Its own prediction log: two processes writing one SQLite file would wait on locks.
        "polling": {
            **base_env,
            **env_over,
            "SIGNALOPS_WAREHOUSE__URL": f"sqlite:///{work / 'polling-warehouse.db'}",
        },
    }
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        with ExitStack() as stack:
            bases = {
                mode: stack.enter_context(
                    sidecar(envs[mode], free_port(), work, work / f"sidecar-{mode}.log")
                )[0]
                for mode in MODES
            }
            clients = {
                mode: stack.enter_context(httpx.Client(base_url=bases[mode], timeout=10))
                for mode in MODES
            }
            for i in range(args.rounds):
                target = "2" if registry.aliases()[c.ALIAS_CHAMPION] == "1" else "1"
                time.sleep(1.3 * (i % 4))  # land at different points of the poll cycle
                served: dict[str, float] = {}
                askers = [
                    threading.Thread(
                        target=first_served, args=(clients[m], body, target, served, m)
                    )
                    for m in MODES
                ]
                for t in askers:  # already asking when the alias moves
                    t.start()
                done = rollback(settings, target, reason=f"bench round {i + 1}")
                changed = pd.Timestamp(done["alias_changed_at"]).timestamp()
                for t in askers:
                    t.join()
                for mode in MODES:
                    times[mode].append(served[mode] - changed)
                print(
                    f"  round {i + 1}: v{target} served "
                    + ", ".join(f"{times[m][-1]:.2f} s ({m})" for m in MODES)
                    + " after the alias moved"
                )
    finally:
        client = redis.Redis.from_url(args.redis_url)
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()
        shutil.rmtree(work, ignore_errors=True)

    poll = settings.serving.poll_interval_s
    median = {m: statistics.median(times[m]) for m in MODES}
    print(f"\nrollback to first response by the restored version, {args.rounds} rounds:")
    for mode, what in (
        ("events", f"Redis notifications (channel {prefix}:registry-events), poll {poll:g} s"),
        ("polling", f"polling only, every {poll:g} s (anchor)"),
    ):
        print(f"  {mode:8} median {median[mode]:.2f} s, max {max(times[mode]):.2f} s  [{what}]")
    verdict = "met" if median["events"] <= TARGET_S else "MISSED"
    print(
        f"  target: median <= {TARGET_S:g} s with notifications: {verdict} "
        f"(median / target = {median['events'] / TARGET_S:.2f}); "
        f"polling median / notification median = {median['polling'] / median['events']:.1f}x"
    )


if __name__ == "__main__":
    main()
