"""A role's small HTTP port for operators: `/metrics`, `/health`, `/ready`.

Every role process serves it when `metrics_address` (TASKLAB_METRICS_ADDRESS=127.0.0.1:PORT)
is set: agents, schedulers and managers have no HTTP port of their own, and a probe or a
Prometheus needs one. The standard library's threading HTTP server, in a daemon thread: a slow
scrape never blocks the role, and the role never waits for its scrapes.

    GET /metrics  the Prometheus text format (every tasklab_* family this process has, plus
                  prometheus_client's process_* and python_* families)
    GET /health   200 {"status": "ok"} while the process runs
    GET /ready    200 or 503 {"status": "ready" | "not ready", "checks": {name: {ok, detail}}}
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

from common.observability.health import CHECKS, ReadinessChecks
from common.observability.logging import get_logger

log = get_logger("tasklab.observability")


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"not HOST:PORT: {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def readiness_body(checks: ReadinessChecks) -> tuple[int, dict[str, object]]:
    ok, results = checks.run()
    body: dict[str, object] = {
        "status": "ready" if ok else "not ready",
        "checks": {name: r.as_dict() for name, r in sorted(results.items())},
    }
    if not results:
        body["detail"] = "the role has not registered its checks yet (still starting)"
    return (200 if ok else 503), body


class _Handler(BaseHTTPRequestHandler):
    server: OperatorServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/health":
            self._json(200, {"status": "ok"})
        elif path == "/ready":
            self._json(*readiness_body(self.server.checks))
        else:
            self._json(404, {"status": "not found", "paths": ["/metrics", "/health", "/ready"]})

    def _json(self, code: int, body: dict[str, object]) -> None:
        self._send(code, json.dumps(body).encode(), "application/json")

    def _send(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # A scrape every 15 s on every role: not worth a log line each.
        return


class OperatorServer(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted role binds the same port at once, without waiting out TIME_WAIT.
    allow_reuse_address = True

    def __init__(
        self,
        address: str,
        registry: CollectorRegistry = REGISTRY,
        checks: ReadinessChecks = CHECKS,
    ) -> None:
        host, port = split_host_port(address)
        self.registry = registry
        self.checks = checks
        super().__init__((host, port), _Handler)
        self._thread: threading.Thread | None = None

    def handle_error(self, request: object, client_address: object) -> None:
        # A scraper that gave up before the answer was written (Prometheus's scrape timeout
        # while this process was frozen or busy, a probe cut short) closes its socket: the
        # write fails with a broken pipe or a reset. That is the client's business, not an
        # error of this process; anything else is still printed with its traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def start(self) -> OperatorServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="operator-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve_operator_port(address: str) -> OperatorServer:
    """Start serving /metrics, /health and /ready on `address`; raises OSError if taken."""
    server = OperatorServer(address).start()
    log.info("metrics, health and readiness on %s (/metrics /health /ready)", server.url)
    return server
