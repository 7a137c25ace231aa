"""A local on-call endpoint: receives the alert webhook on 127.0.0.1 and keeps what arrived.

The demo uses it as a stand-in for Slack / PagerDuty so the whole alert path (Prefect event ->
automation -> notification block -> webhook) runs on one machine; tests use it to assert on what
was delivered. Each alert is also appended to ``log_file`` (JSON lines) when one is given.

>>> r = WebhookReceiver()
>>> r.url.startswith("http://127.0.0.1:")
True
>>> r.close()
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class WebhookReceiver:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None) -> None:
        received: list[dict[str, Any]] = []
        lock = threading.Lock()
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                    alert = {"subject": body.get("subject"), **json.loads(body.get("body") or "{}")}
                except (ValueError, TypeError, AttributeError):
                    alert = {"unparsed": raw.decode("utf-8", "replace")}
                with lock:
                    received.append(alert)
                    if log_file is not None:
                        with open(log_file, "a", encoding="utf-8") as fh:
                            fh.write(json.dumps(alert) + "\n")
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True, name="rtml-oncall").start()
        self.url = f"http://{host}:{self.server.server_address[1]}/oncall"

    def of(self, model: str) -> list[dict[str, Any]]:
        """Alerts about one registered model."""
        return [a for a in self.received if a.get("resource", {}).get("rtml.model.name") == model]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
