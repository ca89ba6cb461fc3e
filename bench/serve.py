"""Benchmark: the sidecar against `mlflow models serve` on the same registered model.

Same machine, same load for every server: wrk (Debian package `wrk`), 1 thread,
8 connections, one row per request, ``--duration`` seconds each (default 10), one server
worker process (the load generator takes the other core). Measured:

* the sidecar's ``/invocations`` (MLflow scoring protocol, one row);
* the sidecar's ``/v1/signals`` by symbol (online features in Redis, prediction log on,
  to PostgreSQL when ``--pg-url`` is reachable, else the SQLite warehouse);
* ``mlflow models serve`` on the same version (``models:/<signal>@champion``), ``/invocations``;
* a null endpoint on the sidecar's own HTTP stack (reads the body, returns a constant).

The sidecar's endpoints and the null endpoint run in ``--rounds`` interleaved rounds
(medians); /invocations also with one connection (latency without queueing) and with the
shadow challenger switched off (what shadow scoring costs). Prints req/s, p50 and p99 for
each, the ratios and whether the targets are met (the hot routes: >= 0.7x the null
endpoint's req/s, p99 <= 2.5x the null's p99, >= 40x mlflow's req/s) and the sidecar's
resident memory with two models loaded (target <= 300 MB).

    .venv/bin/python bench/serve.py [--duration 10]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


TARGET_X_NULL = 0.7  # req/s of a hot route over the null endpoint's
TARGET_P99_X_NULL = 2.5  # its p99 over the null endpoint's p99
TARGET_X_MLFLOW = 40  # req/s over `mlflow models serve`'s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"server not ready at {url}:\n{log.read_text()[-3000:]}")


@contextmanager
def sidecar(env: dict[str, str], port: int, work: Path, log: Path) -> Iterator[tuple[str, int]]:
    """``python -m signalops.serving`` with one worker; yields (base URL, pid) once ready."""
    with open(log, "ab") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signalops.serving", "--workers", "1", "--port", str(port)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(f"{base}/ready", proc, log)
            yield base, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
"""


def wrk(
    url: str, body: str, duration: int, workdir: Path, connections: int = 8
) -> dict[str, float]:
    script = workdir / f"post-{uuid.uuid4().hex[:6]}.lua"
    script.write_text(LUA % body)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(label: str) -> float:
        m = re.search(rf"\s{label}%\s+([\d.]+)(us|ms|s)\b", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "rps": rps,
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "non_2xx": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": 1.0 if errors else 0.0,
    }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_mlflow(
    settings: Any,
    env: dict[str, str],
    work: Path,
    mlflow_log: Path,
    mlflow_port: int,
    split_f: str,
    duration: int,
) -> dict[str, float]:
    """`mlflow models serve` (one worker) on the champion, under the same wrk load."""
    with open(mlflow_log, "wb") as log_handle:
        venv_bin = str(Path(sys.executable).parent)  # mlflow execs `uvicorn` from PATH
        mlflow_env = dict(
            env,
            MLFLOW_TRACKING_URI=settings.mlflow_tracking_uri,
            PATH=f"{venv_bin}:{env.get('PATH', '')}",
        )
        mlflow = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("mlflow")),
                "models",
                "serve",
                "-m",
                f"models:/{settings.signal_name}@champion",
                "--env-manager",
                "local",
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                str(mlflow_port),
            ],
            env=mlflow_env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            cwd=work,
        )
        try:
            base = f"http://127.0.0.1:{mlflow_port}"
            wait_ready(f"{base}/ping", mlflow, mlflow_log)
            check = httpx.post(
                base + "/invocations",
                content=split_f,
                headers={"Content-Type": "application/json"},
                timeout=5,
            )
            assert check.status_code == 200, check.text
            wrk(base + "/invocations", split_f, 2, work)
            result = wrk(base + "/invocations", split_f, duration, work)
            print(f"  mlflow: {result}")
            return result
        finally:
            mlflow.terminate()
            mlflow.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument(
        "--pg-url", default="postgresql+psycopg2://postgres@localhost:5432/postgres"
    )
    parser.add_argument("--redis-url", default="redis://localhost:6379/15")
    parser.add_argument(
        "--skip-mlflow", action="store_true", help="sidecar and null endpoint only (no ratio)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the state (and database) to rerun by hand"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    from signalops.config import load_settings
    from signalops.features.pipeline import publish_online
    from signalops.training import retrain as steps
    from signalops.training import rundir
    from tests.conftest import TRAIN_END, TRAIN_START, build_lake

    work = Path(tempfile.mkdtemp(prefix="signalops-bench-serve-"))
    prefix = f"bench-{uuid.uuid4().hex[:6]}"
    env_over = {
        "SIGNALOPS_STATE_DIR": str(work / "state"),
        "SIGNALOPS_MARKET__SYMBOLS": "AAA,BBB,CCC",
        "SIGNALOPS_ONLINE_STORE__REDIS_URL": args.redis_url,
        "SIGNALOPS_ONLINE_STORE__KEY_PREFIX": prefix,
        "SIGNALOPS_SERVING__MAX_FEATURE_AGE_S": "1e10",
        "SIGNALOPS_SERVING__BENCH_NULL_ROUTE": "true",  # the baseline: /null
        "SIGNALOPS_EVALUATION__BOOTSTRAP_SAMPLES": "100",
    }
    pg_db = None
    try:
        import sqlalchemy as sa

        admin = sa.create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        pg_db = f"signalops_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{pg_db}"'))
        env_over["SIGNALOPS_WAREHOUSE__URL"] = (
            sa.make_url(args.pg_url).set(database=pg_db).render_as_string(hide_password=False)
        )
    except Exception as exc:
        print(f"PostgreSQL not reachable ({exc}); the prediction log goes to SQLite")
        pg_db = None
    settings = load_settings(env=env_over, config_file=None)
    print("setup: synthetic history, features, two registered versions (champion + challenger)")
    build_lake(settings, TRAIN_START, TRAIN_END)
    steps.run_all(settings, steps.plan_request(settings, {}, run_key="bench-v1"))
    steps.run_all(settings, steps.plan_request(settings, {"force": True}, run_key="bench-v2"))
    publish_online(settings)
    names = json.loads(
        (rundir.run_directory(settings, "bench-v1") / "feature_spec.json").read_text()
    )["names"]
    row = [0.01 * i for i in range(len(names))]
    split_f = json.dumps(
        {"dataframe_split": {"columns": [f"f{i}" for i in range(len(names))], "data": [row]}}
    )

    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNALOPS_")}
    env.update(env_over)
    results: dict[str, dict[str, float]] = {}
    side_port, mlflow_port = free_port(), free_port()
    side_log, mlflow_log = work / "sidecar.log", work / "mlflow.log"
    with sidecar(env, side_port, work, side_log) as (base, side_pid):
        targets = (
            ("sidecar /invocations", "/invocations", split_f),
            (
                "sidecar /v1/signals (Redis, log on)",
                "/v1/signals",
                json.dumps({"symbol": "AAA"}),
            ),
            ("null endpoint (same HTTP stack)", "/null", split_f),
        )
        for _, path, body in targets:
            check = httpx.post(base + path, content=body, timeout=5)
            assert check.status_code == 200, check.text
            wrk(base + path, body, 2, work)  # warm-up
        # Rounds, interleaved: the machine's noise hits every target alike; medians.
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        for i in range(args.rounds):
            for name, path, body in targets:
                runs[name].append(wrk(base + path, body, args.duration, work))
                print(f"  round {i + 1}: {name}: {runs[name][-1]}")
        for name, measured in runs.items():
            results[name] = {
                key: statistics.median(r[key] for r in measured) for key in measured[0]
            }
            results[name]["non_2xx"] = sum(r["non_2xx"] for r in measured)
        # Latency without queueing: one connection (with 8, Little's law puts the mean
        # at 8 / throughput, and p99 follows the queue, not the service time).
        results["sidecar /invocations, 1 conn"] = wrk(
            base + "/invocations", split_f, args.duration, work, connections=1
        )
        print(f"  1 connection: {results['sidecar /invocations, 1 conn']}")
        memory = rss_mb(side_pid)
        models = httpx.get(f"{base}/v1/models").json()["models"]
    # What the shadow challenger costs: the same /invocations with shadow scoring off.
    shadow_off = dict(env, SIGNALOPS_SERVING__SHADOW="false")
    with sidecar(shadow_off, side_port, work, side_log) as (base, _):
        wrk(base + "/invocations", split_f, 2, work)
        for name, connections in (
            ("sidecar /invocations, shadow off", 8),
            ("sidecar /invocations, shadow off, 1 conn", 1),
        ):
            results[name] = wrk(
                base + "/invocations", split_f, args.duration, work, connections=connections
            )
            print(f"  {name}: {results[name]}")
    if not args.skip_mlflow:
        results["mlflow models serve /invocations"] = measure_mlflow(
            settings, env, work, mlflow_log, mlflow_port, split_f, args.duration
        )
    ml = results.get("mlflow models serve /invocations", {}).get("rps", float("nan"))
    null = results["null endpoint (same HTTP stack)"]["rps"]
    print(
        f"\nwrk -t1 -c8 -d{args.duration}s, one row per request, one server worker; "
        f"sidecar and null: median of {args.rounds} interleaved rounds"
    )
    print(
        f"{'server':40s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'x mlflow':>9s} {'x null':>7s}"
    )
    for name, r in results.items():
        ratios = (
            f"{'-':>9s} {'-':>7s}"  # another load: not comparable
            if "1 conn" in name
            else f"{r['rps'] / ml:9.1f} {r['rps'] / null:7.2f}"
        )
        print(f"{name:40s} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {ratios}")
        if r["non_2xx"] or r["socket_errors"]:
            print(
                f"  ! {name}: {int(r['non_2xx'])} non-2xx responses, "
                f"socket errors: {bool(r['socket_errors'])}"
            )
    null_p99 = results["null endpoint (same HTTP stack)"]["p99_ms"]
    print("\ntargets (the hot routes, prediction log on, same run):")
    for name in ("sidecar /invocations", "sidecar /v1/signals (Redis, log on)"):
        r = results.get(name)
        if r is None:
            continue
        checks = (
            ("x null", r["rps"] / null, ">=", TARGET_X_NULL),
            ("p99 / null p99", r["p99_ms"] / null_p99, "<=", TARGET_P99_X_NULL),
            ("x mlflow", r["rps"] / ml, ">=", TARGET_X_MLFLOW),
        )
        print(
            f"  {name}: "
            + "; ".join(
                f"{label} {value:.2f} (target {op} {limit}: "
                f"{'met' if (value >= limit if op == '>=' else value <= limit) else 'NOT met'})"
                for label, value, op, limit in checks
            )
        )
    print(
        f"sidecar resident memory with {len(models)} models loaded: {memory:.0f} MB "
        f"(target 300 MB: ratio {memory / 300:.2f})"
    )
    if args.keep:
        print(f"kept: cd {work} && env " + " ".join(f"{k}={v}" for k, v in env_over.items()))
        return
    if pg_db:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)'))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
