"""`make run`'s last step: start the sidecar on the embedded default, call each API once.

Starts `python -m signalops.serving` (one worker, a free port), waits until a model is
loaded, asks for signals by symbol (online features from the warehouse table), through
the MLflow scoring protocol and the KServe V2 protocol, prints the answers and the model
list, then stops it with SIGTERM (which flushes the prediction log).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def main() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = Path(os.environ.get("SIGNALOPS_STATE_DIR", ".signalops"))
    log_path = state / "logs" / "sidecar.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SIGNALOPS_SERVING__PORT=str(port))
    # The demo history ends on a fixed date: accept its online features whatever their age.
    env.setdefault("SIGNALOPS_SERVING__MAX_FEATURE_AGE_S", "1e10")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signalops.serving", "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    print(log_path.read_text()[-2000:])
                    return 1
                time.sleep(0.5)
            else:
                print(f"sidecar not ready (log: {log_path})")
                return 1
            models = httpx.get(f"{url}/v1/models").json()["models"]
            print(
                "    models:", [(m["version"], m["role"], m["feature_set_version"]) for m in models]
            )
            symbols = [
                s.strip()
                for s in os.environ.get("SIGNALOPS_MARKET__SYMBOLS", "BTC-USD,ETH-USD").split(",")
            ][:2]
            r = httpx.post(f"{url}/v1/signals", json={"symbols": symbols}).json()
            for p in r["predictions"]:
                print(
                    f"    /v1/signals {p['symbol']}: p={p['probability']:.4f} {p['signal']} "
                    f"({r['model']['role']} v{r['model']['version']}, risk {p['risk']['reason']}, "
                    f"position {p['risk']['position_size']:+.3f})"
                )
            width = len(next(m for m in models if m["role"] == "champion")["features"])
            row = [0.0] * width
            inv = httpx.post(f"{url}/invocations", json={"instances": [row]}).json()
            print(f"    /invocations (MLflow protocol): {inv}")
            v2 = httpx.post(
                f"{url}/v2/models/direction_1h/infer",
                json={
                    "inputs": [
                        {"name": "features", "shape": [1, width], "datatype": "FP32", "data": row}
                    ]
                },
            ).json()
            print(f"    /v2/models/direction_1h/infer (KServe V2): {v2['outputs'][0]['data']}")
            bad = httpx.post(f"{url}/invocations", json={"instances": [[1.0, "x"]]})
            print(f"    bad input -> {bad.status_code}: {bad.json()['message']}")
            risk = httpx.get(f"{url}/v1/risk/summary").json()
            total = risk["total"]
            print(
                f"    /v1/risk/summary {risk['day']}: {total['trades_today']} trade(s) today, "
                f"exposure {total['exposure']:.3f}, realized P&L {total['realized_pnl_today']:+.4f}"
                f", drawdown {total['drawdown']:.4f}, breaker "
                f"{'open: ' + total['breaker']['reason'] if total['breaker']['open'] else 'closed'}"
            )
            for symbol, one in risk["symbols"].items():
                breaker = "open" if one["breaker"]["open"] else "closed"
                print(
                    f"      {symbol}: {one['trades_today']} trade(s), position "
                    f"{one['position']:+.3f}, breaker {breaker}"
                )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"    stopped (SIGTERM flushed the prediction log); log: {log_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
