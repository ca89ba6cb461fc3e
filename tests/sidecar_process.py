"""The sidecar as a real process for the tests: start, wait until ready, stop."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_sidecar(
    env: dict[str, str], cwd: Path, log_path: Path, workers: int = 1, timeout: float = 90
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m signalops.serving`` on ``env["SIGNALOPS_SERVING__PORT"]``; yields its
    URL and process once ``/ready`` answers; SIGTERM (graceful: flushes the log) on exit."""
    url = f"http://127.0.0.1:{env['SIGNALOPS_SERVING__PORT']}"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "signalops.serving", "--workers", str(workers)],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.time() + timeout
            while True:
                try:
                    if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"sidecar not ready at {url}:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url, proc
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until ``url`` answers 200; fails with the process's log tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{url} did not answer:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.3)
