"""Real Prometheus (Debian package `prometheus`) on a free loopback port.

It scrapes every role listed in a file_sd targets file (common/devstack/monitoring.py), loads
the repository's alert rules (deploy/prometheus/rules/), and sends what fires to the
Alertmanagers it is given. Its time series database lives in the service dir and goes with it.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from common.devstack.base import NativeService, ServiceUnavailable
from common.devstack.monitoring import SCRAPE_JOB, rule_files


def http_ok(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class PrometheusService(NativeService):
    name = "prometheus"

    def __init__(
        self,
        targets_file: Path | None = None,
        alertmanagers: Sequence[str] = (),
        rules: Sequence[Path] | None = None,
        scrape_interval: str = "5s",
        evaluation_interval: str | None = None,
        binary: str | None = None,
    ) -> None:
        # 5 s rather than Prometheus's 1 min default: on a laptop, a killed agent should show
        # as down while the learner is still looking. Tests ask for 1 s.
        self.binary = binary or shutil.which("prometheus") or "/usr/bin/prometheus"
        self.targets_file = targets_file
        self.alertmanagers = list(alertmanagers)
        self.rules = list(rule_files() if rules is None else rules)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval or scrape_interval

    def check_available(self) -> None:
        if not Path(self.binary).exists():
            raise ServiceUnavailable(
                "prometheus not found: run `make setup` (installs the Debian package prometheus)"
            )

    def targets_path(self, workdir: Path) -> Path:
        return self.targets_file or workdir / "targets.json"

    def config(self, workdir: Path, port: int) -> dict:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                # Prometheus refuses a scrape timeout longer than the interval (its default is
                # 10 s); a role that takes a whole interval to answer is as good as down.
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(p) for p in self.rules],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
                if self.alertmanagers
                else []
            },
            "scrape_configs": [
                {
                    "job_name": SCRAPE_JOB,
                    "file_sd_configs": [
                        {"files": [str(self.targets_path(workdir))], "refresh_interval": "5s"}
                    ],
                },
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"{self.host}:{port}"]}],
                },
            ],
        }

    def command(self, workdir: Path, port: int) -> list[str]:
        targets = self.targets_path(workdir)
        if not targets.exists():
            # An empty target list is valid; Prometheus picks up the roles when they are written.
            targets.parent.mkdir(parents=True, exist_ok=True)
            targets.write_text("[]\n")
        cfg = workdir / "prometheus.yml"
        # JSON is YAML: written with the standard library, read by Prometheus as its YAML.
        cfg.write_text(json.dumps(self.config(workdir, port), indent=2) + "\n")
        return [
            self.binary,
            f"--config.file={cfg}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.host}:{port}",
            # POST /-/reload re-reads the config and the rules without a restart.
            "--web.enable-lifecycle",
            "--storage.tsdb.retention.time=1d",
            # Debian's defaults point at /etc/prometheus, which a dev stack must not need.
            f"--web.console.templates={workdir}",
            f"--web.console.libraries={workdir}",
        ]

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_PROMETHEUS_URL": f"http://{host}:{port}"}

    def extra_for(self, workdir: Path, port: int) -> dict[str, object]:
        return {
            "targets_file": str(self.targets_path(workdir)),
            "alertmanagers": self.alertmanagers,
            "rules": [str(p) for p in self.rules],
        }

    def is_ready(self, host: str, port: int) -> bool:
        # /-/ready answers 200 once the TSDB is open and the rules are loaded; the port alone
        # opens earlier, while it still answers 503.
        return http_ok(f"http://{host}:{port}/-/ready")
