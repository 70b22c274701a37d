"""The set of native services one stage needs, started together and remembered on disk.

`tasklab dev up --stage N` starts them in the background and writes their PIDs and addresses to
a state file; `tasklab dev down` reads it back and stops exactly those PIDs.

Pattern: Facade (introduced in stage 1): one object hides three very different servers.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

from common.devstack.base import NativeService, RunningService, free_port, stop_process_group
from common.devstack.monitoring import (
    ALERT_WAITS_ENV,
    ScrapeTarget,
    parse_alert_waits,
    rule_files,
    rules_with_waits,
    write_targets,
)
from common.stages import load_stage

# name -> "module:Class"; loaded lazily so stage 1 never needs a JDK.
SERVICE_CLASSES: dict[str, str] = {
    "redis": "common.devstack.redis:RedisService",
    "zookeeper": "common.devstack.zookeeper:ZooKeeperService",
    "kafka": "common.devstack.kafka:KafkaService",
    # Stage 5's monitoring: Alertmanager first, so Prometheus can be told where it is.
    "alertmanager": "common.devstack.alertmanager:AlertmanagerService",
    "prometheus": "common.devstack.prometheus:PrometheusService",
    # Stage 5's log store: every role ships its JSON lines to it (TASKLAB_LOGS_URL).
    "victorialogs": "common.devstack.victorialogs:VictoriaLogsService",
    # Stage 5's archive of final states (TASKLAB_ARCHIVE_DSN).
    "postgresql": "common.devstack.postgresql:PostgresService",
}


def services_for_stage(stage: int) -> tuple[str, ...]:
    """The services stage `stage` declares in its StageSpec (its bootstrap), in start order."""
    try:
        services = load_stage(stage).services
    except LookupError as exc:
        raise ValueError(str(exc)) from None
    unknown = [name for name in services if name not in SERVICE_CLASSES]
    if unknown:
        raise ValueError(
            f"stage {stage} needs {', '.join(unknown)}, which the dev stack cannot start "
            f"(it knows {', '.join(SERVICE_CLASSES)})"
        )
    return services


def make_service(name: str, **kwargs) -> NativeService:
    module_name, _, cls_name = SERVICE_CLASSES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**kwargs)


def default_state_dir() -> Path:
    return Path(os.environ.get("TASKLAB_DEVSTACK_DIR", ".tasklab/devstack")).resolve()


def alert_waits() -> dict[str, str]:
    """The `for:` waits TASKLAB_DEVSTACK_ALERT_WAITS asks of the dev stack's Prometheus."""
    return parse_alert_waits(os.environ.get(ALERT_WAITS_ENV, ""))


# --8<-- [start:facade]
class DevStack:
    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or default_state_dir()
        self.state_file = self.state_dir / "state.json"

    def load(self) -> list[RunningService]:
        if not self.state_file.exists():
            return []
        data = json.loads(self.state_file.read_text())
        return [RunningService.from_dict(d) for d in data.get("services", [])]

    def _roles(self) -> dict[str, str]:
        if not self.state_file.exists():
            return {}
        return dict(json.loads(self.state_file.read_text()).get("roles", {}))

    def _metrics(self) -> dict[str, str]:
        if not self.state_file.exists():
            return {}
        return dict(json.loads(self.state_file.read_text()).get("metrics", {}))

    def _save(
        self,
        services: list[RunningService],
        roles: dict[str, str] | None = None,
        metrics: dict[str, str] | None = None,
    ) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        roles = self._roles() if roles is None else roles
        metrics = self._metrics() if metrics is None else metrics
        payload = {"services": [s.to_dict() for s in services], "roles": roles, "metrics": metrics}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(self.state_file)

    def up(self, stage: int) -> list[RunningService]:
        """Start what `stage` needs; services already running from an earlier `up` are kept."""
        wanted = services_for_stage(stage)
        if "prometheus" in wanted:
            alert_waits()  # a bad setting is an error before anything starts
        running = [s for s in self.load() if s.alive()]
        have = {s.name for s in running}
        try:
            for name in wanted:
                if name in have:
                    continue
                options = self._service_options(name, running)
                running.append(make_service(name, **options).start(self.state_dir))
                self._save(running)
        finally:
            self._save(running)
        if "prometheus" in wanted:
            self.write_scrape_targets(stage)
        return running

    @property
    def targets_file(self) -> Path:
        """The file_sd file Prometheus reads the roles' operator ports from."""
        return self.state_dir / "prometheus-targets.json"

    def _service_options(self, name: str, running: list[RunningService]) -> dict:
        if name != "prometheus":
            return {}
        alertmanagers = [f"{s.host}:{s.port}" for s in running if s.name == "alertmanager"]
        options = {"targets_file": self.targets_file, "alertmanagers": alertmanagers}
        rules = self.state_dir / "prometheus-rules"
        waits = alert_waits()
        if waits:
            options["rules"] = rules_with_waits(rules, waits)
        elif rules.is_dir():
            # A restart keeps the waits its `up` was given.
            options["rules"] = rule_files(rules)
        return options

    def write_scrape_targets(self, stage: int) -> None:
        """List every process of the stage, at its operator port, for Prometheus to scrape.

        A process that is not running shows as a target that is down (`up == 0`): the stack
        lists what should run, so a missing agent is an alert, not a silence.
        """
        write_targets(
            self.targets_file,
            (
                ScrapeTarget(role, name, address)
                for name, (role, address) in self.metrics_addresses(stage).items()
            ),
        )

    def role_env(self, stage: int) -> dict[str, str]:
        """TASKLAB_* lines for the stage's roles that serve on a fixed address (the REST API).

        A provider binds port 0 and is found in ZooKeeper; people and scripts reach the API by
        its address, so the dev stack chooses a free port once, keeps it in its state file
        (every later `up` prints the same one) and prints it for both sides: the API serves on
        TASKLAB_API_ADDRESS, clients use TASKLAB_API_URL.
        """
        if "api" not in load_stage(stage).roles:
            return {}
        roles = self._roles()
        if "api" not in roles:
            roles["api"] = f"127.0.0.1:{free_port()}"
            self._save(self.load(), roles)
        return {"TASKLAB_API_ADDRESS": roles["api"], "TASKLAB_API_URL": f"http://{roles['api']}"}

    def metrics_addresses(self, stage: int) -> dict[str, tuple[str, str]]:
        """process name -> (role, TASKLAB_METRICS_ADDRESS) for every process of the stage.

        Every role process serves /metrics, /health and /ready on an address of its own, so
        each gets a free loopback port, chosen once and kept in the state file like the API's
        (every later `up` prints the same ones, and `curl` keeps working across restarts).
        """
        chosen = self._metrics()
        wanted = load_stage(stage).processes()
        fresh = False
        for _role, name in wanted:
            if name not in chosen:
                chosen[name] = f"127.0.0.1:{free_port()}"
                fresh = True
        if fresh:
            self._save(self.load(), metrics=chosen)
        return {name: (role, chosen[name]) for role, name in wanted}

    def restart(self, name: str, grace: float = 10.0) -> RunningService:
        """Stop one service (if it still runs) and start it on the same port with its data.

        The roles keep their TASKLAB_* addresses and reconnect by themselves: this is the
        "the broker went away and came back" experiment of the stage 3 runbook.
        """
        services = self.load()
        for i, svc in enumerate(services):
            if svc.name == name:
                # The same options as at `up`: a restarted Prometheus keeps its targets file
                # and its Alertmanager.
                service = make_service(name, **self._service_options(name, services))
                services[i] = service.restart(svc, grace=grace)
                self._save(services)
                return services[i]
        have = ", ".join(s.name for s in services) or "none"
        raise ValueError(f"no {name} in this dev stack (running: {have})")

    def down(self) -> list[RunningService]:
        stopped = []
        # Stop in reverse start order: Prometheus before Kafka before ZooKeeper before Redis.
        for svc in reversed(self.load()):
            stop_process_group(svc.pid)
            stopped.append(svc)
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return stopped

    @staticmethod
    def env_lines(services: list[RunningService], extra: dict[str, str] | None = None) -> list[str]:
        lines = []
        for svc in services:
            for key, value in svc.env.items():
                lines.append(f"{key}={value}")
        lines.extend(f"{key}={value}" for key, value in (extra or {}).items())
        return lines


# --8<-- [end:facade]
