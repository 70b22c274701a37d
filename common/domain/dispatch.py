"""The dispatch entry: "attempt N of this task, placed by the leader of epoch E".

From stage 2 on, the leader puts one on the chosen agent's inbox (`agent:{agentId}:tasks`) in
the same fenced script that marks the task DISPATCHED; the agent claims it, and it sits on the
agent's `processing:{agentId}` list while the task runs. It is the task's queue message (the
spec plus its taskId) with the attempt and epoch it was dispatched with, so the claim can
check both against the task: a copy that outlived a failover can never run.

This is the only place that writes or reads that form in Python. In Lua, accept_dispatch.lua
finds an entry on an inbox by its taskId and attempt; the failover scripts are handed entries
byte for byte and only compare them.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from common.domain.task import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Task,
    TaskValidationError,
    parse_task_message,
)


@dataclass(frozen=True)
class DispatchEntry:
    task: Task
    attempt: int
    epoch: int

    @property
    def task_id(self) -> str:
        return self.task.task_id

    def to_json(self) -> str:
        data = json.loads(self.task.to_message())
        data.update(attempt=self.attempt, epoch=self.epoch)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def parse(
        cls, raw: str | bytes, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    ) -> DispatchEntry:
        """Parse an entry; TaskValidationError if it is not one (no stamp, no id, bad task)."""
        stamp = dispatch_stamp(raw)
        if stamp is None:
            raise TaskValidationError(["message: not a dispatch entry (no attempt and epoch)"])
        task_id, spec = parse_task_message(raw, max_payload_bytes)
        if task_id is None:
            raise TaskValidationError(["taskId: a dispatch entry needs one"])
        return cls(Task.new(spec, task_id=task_id), stamp[0], stamp[1])


def dispatch_stamp(raw: str | bytes) -> tuple[int, int] | None:
    """(attempt, epoch) of a message a scheduler dispatched; None for any other message.

    A hand-pushed message may carry an `attempt` of its own: only a whole, well-typed stamp
    (a positive integer attempt and a non-negative integer epoch) makes a message a dispatch.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or "attempt" not in data or "epoch" not in data:
        return None
    attempt, epoch = data["attempt"], data["epoch"]
    if type(attempt) is not int or type(epoch) is not int or attempt < 1 or epoch < 0:
        return None
    return attempt, epoch


def entry_ref(raw: str | bytes) -> tuple[str | None, int | None]:
    """(taskId, dispatched attempt) of anything on a work list, None for what it lacks.

    A processing list holds dispatch entries (stage 2, 3) or normalised queue messages
    (stage 1: a taskId, no attempt); anything that does not parse is a raw message whose
    claim never ran. Cheap: no validation of the task itself.
    """
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(data, dict) or not isinstance(data.get("taskId"), str):
        return None, None
    attempt = data.get("attempt")
    if type(attempt) is not int:
        attempt = None
    return data["taskId"], attempt


# --8<-- [start:choose-partition]
def choose_partition(
    partitions: int, announced: Mapping[int, int], previous: int | None, agent_id: str
) -> int:
    """The partition of task-dispatch-topic an agent reads (stage 3 on), chosen once at start.

    Each agent reads one partition and the scheduler produces an agent's dispatches to the
    partition the agent announced in ZooKeeper, so a dispatch is read by the agents of one
    partition, not by every agent. The choice:
    1. `previous`, the partition this agent id read last time (it has offsets there), if no
       live agent has announced it since: a restarted agent picks up where it stopped;
    2. else a partition the fewest live agents announced: with no more agents than
       partitions, each reads a partition of its own, and a dispatch is read exactly once;
    3. ties broken by a hash of the agent id, so agents starting together (each blind to the
       others' choices) most likely pick different ones. A collision costs reads, not
       correctness: every agent still skips a dispatch whose header names another agent.
    """
    if partitions < 1:
        raise ValueError(f"task-dispatch-topic has {partitions} partitions")
    if previous is not None and 0 <= previous < partitions and not announced.get(previous):
        return previous
    start = zlib.crc32(agent_id.encode()) % partitions
    return min(
        range(partitions),
        key=lambda p: (announced.get(p, 0), (p - start) % partitions),
    )


# --8<-- [end:choose-partition]
