"""Helpers for the tests that run the real Prometheus and Alertmanager: a webhook receiver the
test owns, Prometheus's HTTP API, and the alert rules with their waits scaled down."""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml
from observability_support import free_address, wait_ready

from common.devstack.alertmanager import AlertmanagerService
from common.devstack.monitoring import DEPLOY_DIR, RULES_DIR, ScrapeTarget, write_targets
from common.devstack.prometheus import PrometheusService
from common.testing import RoleProcess, eventually
from common.testing.processes import stop_all


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

    def values(self, expr: str, label: str) -> dict[str, float]:
        """An instant query's result as {the value of `label`: the sample's value}."""
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(expr)}

    def rule(self, name: str) -> dict:
        """One alerting rule as Prometheus evaluates it: state, lastEvaluation, alerts."""
        groups = self.get("/api/v1/rules")["groups"]
        return next(r for g in groups for r in g["rules"] if r["name"] == name)

    def rule_names(self) -> set[str]:
        groups = self.get("/api/v1/rules")["groups"]
        return {rule["name"] for group in groups for rule in group["rules"]}


_DURATION = re.compile(r"^(\d+)([smh])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


def scaled_rules(dest: Path, factor: int = 30, factors: dict[str, int] | None = None) -> Path:
    """The repository's rules with every `for:` wait divided by `factor` (at least 1 s), or by
    `factors[name]` for the alerts it names.

    A test cannot wait AgentDown's minute on every run; with a scrape and an evaluation each
    second, the same expressions with 1/30 of their waits fire in seconds. Only `for` changes:
    the expressions, labels and annotations are the deployed ones.
    """
    rules = yaml.safe_load((RULES_DIR / "tasklab.yml").read_text())
    unknown = set(factors or {}) - {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert not unknown, f"no such alert: {unknown}"
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                amount, unit = _DURATION.match(rule["for"]).groups()
                by = (factors or {}).get(rule["alert"], factor)
                rule["for"] = f"{max(1, int(amount) * _SECONDS[unit] // by)}s"
    dest.write_text(yaml.safe_dump(rules, sort_keys=False))
    return dest


def alert_names() -> list[str]:
    """Every alert of the repository's rules file."""
    rules = yaml.safe_load((RULES_DIR / "tasklab.yml").read_text())
    return [rule["alert"] for group in rules["groups"] for rule in group["rules"]]


DASHBOARDS_DIR = DEPLOY_DIR / "grafana" / "dashboards"


def dashboard_queries(names: Iterable[str]) -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) for every query of every panel of `names`."""
    found = []
    for name in names:
        for panel in json.loads((DASHBOARDS_DIR / name).read_text())["panels"]:
            for target in panel.get("targets", []):
                found.append((name, panel["title"], target["expr"]))
    return found


def as_prometheus_sees_it(expr: str) -> str:
    """What Grafana would send: its variables replaced, as with "All" agents selected and a
    rate interval that spans the work a test ran a minute or two before."""
    return expr.replace("$__rate_interval", "5m").replace("$agent", ".+")


def panels_without_data(prometheus: PrometheusAPI, queries: list[tuple[str, str, str]]) -> list:
    empty = []
    for dashboard, title, expr in queries:
        result = prometheus.query(as_prometheus_sees_it(expr))
        values = [float(r["value"][1]) for r in result]
        # NaN is what a ratio or a quantile over no events gives: a panel with nothing to show.
        if not any(math.isfinite(v) for v in values):
            empty.append(f"{dashboard} / {title}: {expr} -> {result}")
    return empty


def wait_until_scraped(prometheus: PrometheusAPI, instances: int) -> None:
    """Until Prometheus scrapes every one of `instances` tasklab targets."""
    eventually(
        lambda: len(prometheus.query('up{job="tasklab"} == 1')) == instances,
        30,
        0.5,
        message="Prometheus scrapes every role",
    )


def wait_until_every_series_scraped_thrice(prometheus: PrometheusAPI) -> None:
    """rate() needs two samples of a series: wait until every tasklab series, those the work
    just created included, has been scraped a few times (before a test kills its process)."""

    def scraped_thrice() -> bool:
        names = prometheus.get("/api/v1/label/__name__/values")
        return all(
            not prometheus.query(f"count_over_time({name}[5m]) < 3")
            for name in names
            if name.startswith("tasklab_")
        )

    eventually(scraped_thrice, 20, 0.5, message="every tasklab series scraped three times")


@contextmanager
def monitoring(
    root: Path, webhook_url: str, factor: int = 30, factors: dict[str, int] | None = None
) -> Iterator[tuple[PrometheusAPI, Path]]:
    """The real Alertmanager (routed to `webhook_url`, one-second group wait) and Prometheus
    (scraping and evaluating every second, the rules' waits divided by `factor`, or by
    `factors[name]` for the alerts it names, the targets file it yields)."""
    alertmanager = AlertmanagerService(
        webhook_url=webhook_url, group_wait="1s", group_interval="1s", repeat_interval="1h"
    )
    targets = root / "targets.json"
    prometheus = PrometheusService(
        targets_file=targets,
        rules=[scaled_rules(root / "rules.yml", factor, factors)],
        scrape_interval="1s",
    )
    started = []
    try:
        am = alertmanager.start(root)
        started.append((alertmanager, am))
        prometheus.alertmanagers = [f"{am.host}:{am.port}"]
        prom = prometheus.start(root)
        started.append((prometheus, prom))
        yield PrometheusAPI(prom.env["TASKLAB_PROMETHEUS_URL"]), targets
    finally:
        for service, running in reversed(started):
            service.stop(running)


@dataclass
class ListedRoles:
    """Role processes, each with its operator port, listed in Prometheus's targets file as the
    dev stack lists them (role, and the process name as instance and as its id)."""

    procs: dict[str, RoleProcess]
    addresses: dict[str, str]  # process name -> operator address
    roles: dict[str, str]  # process name -> role

    @classmethod
    def start(
        cls,
        stage: int,
        processes: Iterable[tuple[str, str]],
        env: dict[str, str],
        root: Path,
        targets: Path,
        own_env: dict[str, dict[str, str]] | None = None,
    ) -> ListedRoles:
        listed = cls({}, {}, {})
        for role, name in processes:
            listed.addresses[name], listed.roles[name] = free_address(), role
            ids = {f"TASKLAB_{kind.upper()}_ID": name for kind in ("agent", "scheduler", "manager")}
            listed.procs[name] = RoleProcess(
                role,
                stage,
                {
                    **env,
                    **ids,
                    **(own_env or {}).get(name, {}),
                    "TASKLAB_METRICS_ADDRESS": listed.addresses[name],
                },
                root,
                name=name,
            ).start()
        write_targets(
            targets, (ScrapeTarget(listed.roles[n], n, a) for n, a in listed.addresses.items())
        )
        for name, proc in listed.procs.items():
            wait_ready(proc, listed.addresses[name], timeout=60)
        return listed

    def stop(self) -> None:
        stop_all(self.procs.values())  # side by side, not a second or so each in turn
        for proc in self.procs.values():
            print(f"\n----- {proc.name} (pid {proc.pid}) -----\n{proc.log_text()[-3000:]}")
