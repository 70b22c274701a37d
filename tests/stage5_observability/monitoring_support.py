"""Helpers for the tests that run the real Prometheus and Alertmanager: a webhook receiver the
test owns, Prometheus's HTTP API, and the alert rules with their waits scaled down."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

from common.devstack.monitoring import RULES_DIR


@dataclass
class WebhookReceiver:
    """What Alertmanager's webhook sends, collected: a tiny HTTP server on 127.0.0.1."""

    notifications: list[dict] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                # Quiet: the test prints what it received when it fails.
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/alerts"

    def alerts(self, name: str, status: str = "firing") -> list[dict]:
        """Every alert called `name` with `status` that a notification carried so far."""
        with self._lock:
            return [
                alert
                for note in self.notifications
                for alert in note["alerts"]
                if alert["labels"].get("alertname") == name and alert["status"] == status
            ]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@dataclass(frozen=True)
class PrometheusAPI:
    url: str

    def get(self, path: str, **params) -> dict:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10.0)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's result vector (or a scalar, as one element)."""
        data = self.get("/api/v1/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets(self, job: str = "tasklab") -> list[dict]:
        return [t for t in self.get("/api/v1/targets")["activeTargets"] if t["scrapePool"] == job]

    def rule_names(self) -> set[str]:
        groups = self.get("/api/v1/rules")["groups"]
        return {rule["name"] for group in groups for rule in group["rules"]}


_DURATION = re.compile(r"^(\d+)([smh])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def scaled_rules(dest: Path, factor: int = 30) -> Path:
    """The repository's rules with every `for:` wait divided by `factor` (at least 1 s).

    A test cannot wait AgentDown's minute on every run; with a scrape and an evaluation each
    second, the same expressions with 1/30 of their waits fire in seconds. Only `for` changes:
    the expressions, labels and annotations are the deployed ones.
    """
    rules = yaml.safe_load((RULES_DIR / "tasklab.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                amount, unit = _DURATION.match(rule["for"]).groups()
                rule["for"] = f"{max(1, int(amount) * _SECONDS[unit] // factor)}s"
    dest.write_text(yaml.safe_dump(rules, sort_keys=False))
    return dest
