"""What Prometheus scrapes in the native stack: a file_sd targets file the stack keeps current.

Prometheus finds the roles through `file_sd_configs`: a JSON list of target groups, each with
its addresses and the labels every series scraped from them gets. The dev stack (and a test
that starts its own roles) writes one group per role process: its operator address, with
`role` (agent, scheduler, ...) and `instance` (the process name, which is also its agent or
scheduler id), so an alert names "agent-2", not "127.0.0.1:41503".

Why not ZooKeeper serversets (`serverset_sd_configs`), which Prometheus also reads? Prometheus
expects each member znode to hold Finagle's serverset JSON (`serviceEndpoint`, `status`);
tasklab's `/live-agents/{id}` nodes hold the agent's own record (capacity, task types), only
agents and RPC providers register at all, and an agent that died would vanish from the set
rather than show as a target that is down, which is exactly what AgentDown must see. A file
written from the processes the stack itself starts keeps a dead one listed until it is removed
on purpose.

Prometheus watches the file (inotify, and re-reads it every `refresh_interval` anyway);
writing it through a rename means it never reads half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# The repository's deploy files: alert rules, their unit tests, dashboards. The native stack
# loads the very rules the compose and Kubernetes deployments use.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEPLOY_DIR = REPO_ROOT / "deploy"
RULES_DIR = DEPLOY_DIR / "prometheus" / "rules"

# The scrape job every tasklab role is in; rules and dashboards select `job="tasklab"`.
SCRAPE_JOB = "tasklab"


# --8<-- [start:targets]
@dataclass(frozen=True)
class ScrapeTarget:
    """One role process's operator port, as Prometheus should label it."""

    role: str
    instance: str
    address: str

    def group(self) -> dict:
        return {"targets": [self.address], "labels": {"role": self.role, "instance": self.instance}}


def write_targets(path: Path, targets: Iterable[ScrapeTarget]) -> None:
    """Replace the file_sd file at `path` with these targets (atomically: write, then rename)."""
    groups = [t.group() for t in sorted(targets, key=lambda t: t.instance)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(groups, indent=2) + "\n")
    tmp.replace(path)


# --8<-- [end:targets]


def read_targets(path: Path) -> list[ScrapeTarget]:
    if not path.exists():
        return []
    return [
        ScrapeTarget(g["labels"]["role"], g["labels"]["instance"], address)
        for g in json.loads(path.read_text())
        for address in g["targets"]
    ]


def rule_files(rules_dir: Path = RULES_DIR) -> list[Path]:
    """The alert rule files Prometheus loads (every *.yml in the rules folder)."""
    return sorted(rules_dir.glob("*.yml"))
