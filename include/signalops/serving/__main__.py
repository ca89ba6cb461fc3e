"""``python -m signalops.serving``: the sidecar on uvicorn, one worker process per core."""

from __future__ import annotations

import argparse
import logging
import os


def create_app() -> object:
    """uvicorn factory: each worker process builds its own app (models, log, metrics)."""
    import sys

    # Background threads (prediction log, pollers) must hand the GIL back quickly: with the
    # default 5 ms switch interval a request waiting on I/O can wait that long for it.
    sys.setswitchinterval(0.0005)
    from signalops.config import load_settings
    from signalops.serving.app import build_app

    return build_app(load_settings())


def main() -> None:
    import uvicorn

    from signalops.config import load_settings

    settings = load_settings()
    cfg = settings.serving
    parser = argparse.ArgumentParser(prog="python -m signalops.serving")
    parser.add_argument("--host", default=cfg.host)
    parser.add_argument("--port", type=int, default=cfg.port)
    parser.add_argument("--workers", type=int, default=cfg.workers or os.cpu_count() or 1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Several processes: /metrics aggregates the counters every worker writes here.
        import tempfile

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="signalops-metrics-")
    uvicorn.run(
        "signalops.serving.__main__:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
