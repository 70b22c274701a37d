"""What a live agent tells the cluster about itself: the data of `/live-agents/{agentId}`.

Kept free of kazoo so placement strategies (and their unit tests) can use it without ZooKeeper.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class AgentInfo:
    """The data of a `/live-agents/{agentId}` node (camelCase JSON)."""

    agent_id: str
    capacity: int
    task_types: list[str]
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    started_at: float = field(default_factory=time.time)
    load: int = 0  # tasks running right now; LeastLoadStrategy reads it
    draining: bool = False  # shutting down: finishing its tasks, wants no new ones
    # Stage 3 on: the partition of task-dispatch-topic this agent reads (and only that one);
    # the scheduler produces its dispatches there. None where dispatches do not ride on Kafka.
    dispatch_partition: int | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        wire = {
            "agentId": data["agent_id"],
            "host": data["host"],
            "pid": data["pid"],
            "capacity": data["capacity"],
            "taskTypes": data["task_types"],
            "startedAt": data["started_at"],
            "load": data["load"],
            "draining": data["draining"],
        }
        if data["dispatch_partition"] is not None:
            wire["dispatchPartition"] = data["dispatch_partition"]
        return json.dumps(wire, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> AgentInfo:
        d = json.loads(raw)
        return cls(
            agent_id=str(d["agentId"]),
            capacity=int(d.get("capacity", 1)),
            task_types=list(d.get("taskTypes", [])),
            host=str(d.get("host", "")),
            pid=int(d.get("pid", 0)),
            started_at=float(d.get("startedAt", 0.0)),
            load=int(d.get("load", 0)),
            draining=bool(d.get("draining", False)),
            dispatch_partition=(
                int(d["dispatchPartition"]) if d.get("dispatchPartition") is not None else None
            ),
        )
