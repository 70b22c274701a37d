"""Real Alertmanager (Debian package `prometheus-alertmanager`) on a free loopback port.

One route to one receiver: a webhook at `webhook_url` (a chat bridge, a pager, the test's own
HTTP server), or, with none given, a receiver that only keeps the alerts, which its API and
`amtool alert query` still show.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from common.devstack.base import NativeService, ServiceUnavailable
from common.devstack.prometheus import http_ok


class AlertmanagerService(NativeService):
    name = "alertmanager"

    def __init__(
        self,
        webhook_url: str | None = None,
        group_wait: str = "10s",
        group_interval: str = "1m",
        repeat_interval: str = "4h",
        binary: str | None = None,
    ) -> None:
        self.binary = (
            binary
            or shutil.which("prometheus-alertmanager")
            or shutil.which("alertmanager")
            or "/usr/bin/prometheus-alertmanager"
        )
        self.webhook_url = webhook_url
        # How long the first alert of a group waits for others to join it before it is sent:
        # 30 s by default, which would be most of a test's time budget.
        self.group_wait = group_wait
        self.group_interval = group_interval
        self.repeat_interval = repeat_interval

    def check_available(self) -> None:
        if not Path(self.binary).exists():
            raise ServiceUnavailable(
                "prometheus-alertmanager not found: run `make setup` "
                "(installs the Debian package prometheus-alertmanager)"
            )

    def config(self) -> dict:
        receiver: dict = {"name": "webhook" if self.webhook_url else "keep"}
        if self.webhook_url:
            receiver["webhook_configs"] = [{"url": self.webhook_url, "send_resolved": True}]
        return {
            "route": {
                "receiver": receiver["name"],
                # One notification per alert and instance: "agent-2 is down" is not merged
                # with agent-3's, so each can be acknowledged and resolved on its own.
                "group_by": ["alertname", "instance"],
                "group_wait": self.group_wait,
                "group_interval": self.group_interval,
                "repeat_interval": self.repeat_interval,
            },
            "receivers": [receiver],
        }

    def command(self, workdir: Path, port: int) -> list[str]:
        cfg = workdir / "alertmanager.yml"
        # JSON is YAML: written with the standard library, read by Alertmanager as its YAML.
        cfg.write_text(json.dumps(self.config(), indent=2) + "\n")
        return [
            self.binary,
            f"--config.file={cfg}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={self.host}:{port}",
            # An empty cluster address turns off the HA gossip, which would otherwise bind
            # 0.0.0.0:9094 and clash with every other Alertmanager on the machine.
            "--cluster.listen-address=",
        ]

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_ALERTMANAGER_URL": f"http://{host}:{port}"}

    def extra_for(self, workdir: Path, port: int) -> dict[str, object]:
        return {"webhook_url": self.webhook_url}

    def is_ready(self, host: str, port: int) -> bool:
        return http_ok(f"http://{host}:{port}/-/ready")
