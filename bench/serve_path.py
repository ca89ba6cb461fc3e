"""Benchmark: the sidecar's own time per request, without an HTTP server.

Drives the sidecar's ASGI app directly (no uvicorn, no sockets) with one-row
``/invocations`` requests (``dataframe_split``) and the null endpoint, ``--requests`` each
after a warm-up, in interleaved rounds; prints the median microseconds per request of each
and their difference (what scoring, the risk guard, the prediction log and metrics cost on
top of routing and JSON). The model is a tiny registered ONNX graph (3 features), so the
figure is the sidecar's Python path, not the model's. The prediction log writes to a SQLite
warehouse in a temporary state directory.

    .venv/bin/python bench/serve_path.py [--requests 4000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


async def run(requests: int, rounds: int) -> dict[str, list[float]]:
    from signalops.config import load_settings
    from signalops.registry import Registry
    from signalops.registry import contracts as c
    from signalops.serving.app import Sidecar, build_app
    from tests.integration.test_swaps import NAMES, register

    work = Path(tempfile.mkdtemp(prefix="signalops-bench-path-"))
    os.chdir(work)  # no signalops.yaml of the repo
    settings = load_settings(
        env={
            "SIGNALOPS_STATE_DIR": str(work / "state"),
            "SIGNALOPS_SIGNAL_NAME": "bench_path",
            "SIGNALOPS_SERVING__BENCH_NULL_ROUTE": "true",
        }
    )
    registry = Registry(settings)
    registry.set_alias(c.ALIAS_CHAMPION, register(registry, work))
    app = build_app(settings, Sidecar(settings, start_background=False))
    body = orjson.dumps({"dataframe_split": {"columns": NAMES, "data": [[0.1, 0.2, 0.3]]}})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def one(path: str) -> None:
        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
        }  # fmt: skip
        await app(scope, receive, send)
        if status != [200]:
            raise SystemExit(f"{path} answered {status}")

    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, startup.get, events.put)
    )
    started = await events.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"sidecar did not start: {started}")
    out: dict[str, list[float]] = {"/invocations": [], "/null": []}
    for _ in range(rounds):
        for path, times in out.items():
            for _ in range(300):
                await one(path)
            t0 = time.perf_counter()
            for _ in range(requests):
                await one(path)
            times.append((time.perf_counter() - t0) / requests * 1e6)
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    out = asyncio.run(run(args.requests, args.rounds))
    inv, null = statistics.median(out["/invocations"]), statistics.median(out["/null"])
    print(f"\n{args.requests} requests x {args.rounds} interleaved rounds, in process (medians)")
    print(f"/invocations (one row, log on): {inv:.1f} us/request")
    print(f"null endpoint:                  {null:.1f} us/request")
    print(f"the sidecar's own work:         {inv - null:.1f} us/request")


if __name__ == "__main__":
    main()
