"""How a stage plugs into tasklab without `common` importing it.

Each stage package exposes `STAGE = StageSpec(...)` in its `bootstrap.py`, and pyproject.toml
registers it under the `tasklab.stages` entry-point group. Everything that runs "a stage" reads
it from there, by number: the CLI (`tasklab run ROLE --stage N`) its roles, the dev stack
(`tasklab dev up --stage N`) its backing services, and the demo, the contract suite and the
benchmark its process topology. Adding a stage is one bootstrap and one entry-point line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

from common.config import Settings

ENTRY_POINT_GROUP = "tasklab.stages"


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    number: int
    title: str
    # role name -> function that runs that role until it is told to stop
    roles: Mapping[str, Callable[[Settings], None]]
    # The backing services the stage needs, in start order (each may depend on the ones before
    # it): names the dev stack knows, e.g. ("redis", "zookeeper", "kafka").
    services: tuple[str, ...]
    # The processes the whole stage runs as, in start order: (role, how many).
    topology: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        # Checked when the bootstrap is imported, so a typo fails `tasklab run` at once instead
        # of leaving the demo or the contract suite without, say, its scheduler.
        if not self.services:
            raise ValueError(f"stage {self.number} declares no backing services")
        if len(set(self.services)) != len(self.services):
            raise ValueError(f"stage {self.number} lists a service twice: {self.services}")
        for role, count in self.topology:
            if role not in self.roles:
                raise ValueError(
                    f"stage {self.number}'s topology names role {role!r}, which it does not "
                    f"define (roles: {', '.join(sorted(self.roles))})"
                )
            if count < 1:
                raise ValueError(f"stage {self.number} runs {count} {role} process(es)")

    def processes(self, scale: Mapping[str, int] | None = None) -> list[tuple[str, str]]:
        """(role, process name) for every process of the topology: ("agent", "agent-2").

        `scale` overrides how many of a role run (the benchmark varies the agents).
        """
        scale = scale or {}
        return [
            (role, f"{role}-{n + 1}")
            for role, count in self.topology
            for n in range(scale.get(role, count))
        ]


def load_stage(number: int) -> StageSpec:
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if str(number) not in found:
        have = ", ".join(sorted(found)) or "none"
        raise LookupError(f"stage {number} is not installed (installed stages: {have})")
    try:
        return found[str(number)].load()
    except ImportError as exc:
        # Installed without its extra (`pip install -e '.[stage2]'`): say so in one line.
        raise LookupError(f"stage {number} cannot be loaded: {exc}") from None


def installed_stages() -> list[int]:
    return sorted(int(ep.name) for ep in entry_points(group=ENTRY_POINT_GROUP))
