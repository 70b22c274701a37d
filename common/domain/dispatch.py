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
def partition_order(partitions: int, previous: int | None, agent_id: str) -> list[int]:
    """The partitions of task-dispatch-topic an agent tries to claim, in order (stage 3 on).

    Each agent reads one partition, claimed for itself in ZooKeeper, and the scheduler
    produces an agent's dispatches to the partition the agent names, so a dispatch is read
    once, by the agent it is for. The order: `previous` first (the partition this agent id
    read last time, where its committed offset is), so a restarted agent picks up where it
    stopped; then every partition from one picked by a hash of the agent id, so agents
    starting together mostly try different ones first and few claims collide.
    """
    if partitions < 1:
        raise ValueError(f"task-dispatch-topic has {partitions} partitions")
    start = zlib.crc32(agent_id.encode()) % partitions
    order = [(start + k) % partitions for k in range(partitions)]
    if previous is not None and 0 <= previous < partitions:
        order.remove(previous)
        order.insert(0, previous)
    return order


def least_shared(partitions: int, announced: Mapping[int, int], agent_id: str) -> int:
    """The partition to share when every one is claimed (more agents than partitions): the one
    the fewest live agents read. Sharing costs reads, never correctness: each agent skips a
    dispatch whose header names another agent."""
    order = partition_order(partitions, None, agent_id)
    return min(order, key=lambda p: (announced.get(p, 0), order.index(p)))


# --8<-- [end:choose-partition]
