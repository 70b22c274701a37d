"""How a stage plugs into the one `tasklab` CLI without `common` importing it.

Each stage package exposes `STAGE = StageSpec(...)` in its `bootstrap.py`, and pyproject.toml
registers it under the `tasklab.stages` entry-point group. The CLI looks stages up by number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points

from common.config import Settings


@dataclass(frozen=True)
class StageSpec:
    number: int
    title: str
    # role name -> function that runs that role until it is told to stop
    roles: dict[str, Callable[[Settings], None]] = field(default_factory=dict)


def load_stage(number: int) -> StageSpec:
    found = {ep.name: ep for ep in entry_points(group="tasklab.stages")}
    if str(number) not in found:
        have = ", ".join(sorted(found)) or "none"
        raise LookupError(f"stage {number} is not installed (installed stages: {have})")
    return found[str(number)].load()


# The processes each stage runs in a demo or a contract test: role -> how many.
TOPOLOGY: dict[int, list[tuple[str, int]]] = {
    1: [("agent", 2)],
    2: [("scheduler", 2), ("agent", 3)],
    3: [("scheduler", 2), ("agent", 3), ("manager", 1)],
}


def installed_stages() -> list[int]:
    return sorted(int(ep.name) for ep in entry_points(group="tasklab.stages"))
