"""A local HTTP endpoint that records what the slack-sdk client sends (the only stand-in:
Slack is an outside service). Answers like Slack: ``{"ok": true}`` for the Web API, ``ok``
for incoming webhooks, or a configured error status."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class SlackRecorder:
    url: str
    requests: list[Recorded] = field(default_factory=list)
    status: int = 200
    # answered first, one per request, before `status` (429 comes with Retry-After: 1)
    script: list[int] = field(default_factory=list)


@contextmanager
def slack_recorder() -> Iterator[SlackRecorder]:
    recorder = SlackRecorder(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if self.headers.get("Content-Type", "").startswith("application/json"):
                body = json.loads(raw)
            else:
                body = {k: v[0] for k, v in parse_qs(raw).items()}
            recorder.requests.append(Recorded(self.path, dict(self.headers), body))
            api = self.path.startswith("/api/")
            status = recorder.script.pop(0) if recorder.script else recorder.status
            payload = json.dumps({"ok": status == 200}).encode() if api else b"ok"
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "application/json" if api else "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
