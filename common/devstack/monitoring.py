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
import re
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


# The dev stack's Prometheus with some alerts' `for:` waits changed, e.g.
# "AgentDown=15s,QueueBacklog=10s": the runbook test sets it, so that its run sees each alert
# of Break it fire without waiting out the deployed minutes a learner waits.
ALERT_WAITS_ENV = "TASKLAB_DEVSTACK_ALERT_WAITS"
_WAIT = re.compile(r"^\d+[smh]$")
_ALERT = re.compile(r"^(\s*)- alert:\s*(\S+)\s*$")
_FOR = re.compile(r"^(\s*)for:\s*\S+\s*$")


def parse_alert_waits(text: str) -> dict[str, str]:
    """`NAME=DURATION,...` as {alert name: Prometheus duration}; a clear error otherwise."""
    waits = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, wait = (s.strip() for s in item.partition("="))
        if not sep or not name or not _WAIT.match(wait):
            raise ValueError(
                f"{ALERT_WAITS_ENV}: {item!r} is not NAME=DURATION (AgentDown=15s; a number "
                "and a unit s, m or h)"
            )
        waits[name] = wait
    return waits


def rules_with_waits(
    dest_dir: Path, waits: dict[str, str], rules_dir: Path = RULES_DIR
) -> list[Path]:
    """Copies of the rule files in `dest_dir`, each named alert's `for:` line set to its wait;
    every other line (expressions, labels, annotations, other alerts) as deployed."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    changed: set[str] = set()
    copies = []
    for source in rule_files(rules_dir):
        lines, alert, key_indent = [], None, ""
        for line in source.read_text().splitlines(keepends=True):
            if found := _ALERT.match(line):
                # The rule's own keys sit two columns in from its `- `: a `for:` anywhere
                # else (in a description's text) is not its wait.
                alert, key_indent = found.group(2), found.group(1) + "  "
            elif (found := _FOR.match(line)) and alert in waits and found.group(1) == key_indent:
                line = f"{key_indent}for: {waits[alert]}\n"
                changed.add(alert)
            lines.append(line)
        copy = dest_dir / source.name
        copy.write_text("".join(lines))
        copies.append(copy)
    unknown = sorted(set(waits) - changed)
    if unknown:
        raise ValueError(
            f"{ALERT_WAITS_ENV}: no alert with a `for:` wait called {', '.join(unknown)} "
            f"in {rules_dir}"
        )
    return copies
