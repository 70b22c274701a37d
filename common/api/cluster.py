"""What the console's agents page adds to ListAgents: who leads the schedulers, with which
epoch, and which agents are draining (read from ZooKeeper and Redis, as `tasklab explain`
does: no TaskService call carries them).

- leader: the first contender of `/scheduler-leader` (the lock's holder), by its identifier;
- epoch: `fence:scheduler`, the highest leader epoch Redis has seen: the leader raises it to
  its own before its first write, so it is the current term's epoch (or a newer leader's);
- draining, capacity, host: each `/live-agents/{agentId}` node's data.
Any part that cannot be read is None, with the reason in `note`: the page shows what it knows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common import keys
from common.coordination.agent_info import AgentInfo
from common.coordination.paths import LIVE_AGENTS, SCHEDULER_LEADER, agent_node


@dataclass(frozen=True)
class Cluster:
    leader: str | None = None
    epoch: int | None = None
    agents: dict[str, AgentInfo] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def read_cluster(zk, redis, zk_note: str = "not connected") -> Cluster:
    notes: list[str] = []
    leader, epoch, agents = None, None, {}
    try:
        fence = redis.get(keys.SCHEDULER_FENCE)
        epoch = int(fence) if fence is not None else None
    except Exception as exc:  # noqa: BLE001 - an outage is shown as "unknown", with why
        notes.append(f"Redis: {type(exc).__name__}: {exc}")
    if zk is None:
        notes.append(f"ZooKeeper: {zk_note}")
        return Cluster(leader, epoch, agents, tuple(notes))
    try:
        raw = getattr(zk, "raw", zk)
        contenders = raw.Lock(SCHEDULER_LEADER).contenders()
        leader = contenders[0] if contenders else None
        for agent_id in sorted(zk.get_children(LIVE_AGENTS)):
            data, _ = zk.get(agent_node(agent_id))
            try:
                agents[agent_id] = AgentInfo.from_json(data)
            except (ValueError, KeyError, TypeError):
                notes.append(f"agent {agent_id}: its node's data is not an agent's")
    except Exception as exc:  # noqa: BLE001 - as above
        notes.append(f"ZooKeeper: {type(exc).__name__}: {exc}")
    return Cluster(leader, epoch, agents, tuple(notes))
