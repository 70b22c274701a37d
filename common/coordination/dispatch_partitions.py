"""Which agent reads which partition of task-dispatch-topic: claims in ZooKeeper (stage 3 on).

An agent claims a partition by creating the ephemeral node `/dispatch-partitions/{n}`, before
it registers; the node lives as long as the agent's ZooKeeper session, like its
`/live-agents/{agentId}` node. A claim is a create, so two agents can never both hold one
partition: the second create fails and that agent tries its next partition
(`partition_order`). Nothing is handed over when an agent dies: its session expires, its
claim disappears, and the next agent to start may claim the partition. Dispatches left on it
for the dead agent are refused by `accept_dispatch.lua` (the leader failed their tasks over).

When every partition is claimed (more agents than partitions), an agent reads the one the
fewest live agents read, unclaimed, and shares it: reads, not correctness (see
`least_shared`). After a session loss the agent re-registers and claims its partition again;
if another agent took it meanwhile, the two share it until one of them restarts.
"""

from __future__ import annotations

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError

from common.coordination.agent_info import AgentInfo
from common.coordination.paths import LIVE_AGENTS, agent_node, dispatch_partition_node
from common.coordination.zk import RetryingClient
from common.observability import get_logger

log = get_logger("tasklab.registry")


def claim_partition(zk: RetryingClient, agent_id: str, order: list[int]) -> int | None:
    """Claim the first partition of `order` nobody holds; None if all are held."""
    for partition in order:
        path = dispatch_partition_node(partition)
        try:
            zk.create(path, agent_id.encode(), ephemeral=True, makepath=True)
            return partition
        except NodeExistsError:
            # Our own create, retried after a dropped reply, holds it too.
            try:
                stat = zk.exists(path)
            except KazooException:
                stat = None
            if stat is not None and stat.ephemeralOwner == zk.session_id:
                return partition
    return None


def reclaim_partition(zk: RetryingClient, agent_id: str, partition: int) -> None:
    """After a session loss: claim the partition this agent reads again, if it is free."""
    if claim_partition(zk, agent_id, [partition]) is None:
        log.warning(
            "dispatch partition %d was claimed by another agent while our session was lost: "
            "sharing it (each skips the other's dispatches)",
            partition,
        )


def announced_partitions(zk: RetryingClient) -> dict[int, int]:
    """How many live agents read each partition of task-dispatch-topic, as their nodes say."""
    counts: dict[int, int] = {}
    try:
        children = zk.get_children(LIVE_AGENTS)
    except NoNodeError:
        return counts  # no /live-agents yet: nobody reads anything
    for agent_id in children:
        try:
            data, _ = zk.get(agent_node(agent_id))
            partition = AgentInfo.from_json(data).dispatch_partition
        except (KazooException, ValueError, KeyError, TypeError):
            continue  # gone since the listing, or not agent JSON
        if partition is not None:
            counts[partition] = counts.get(partition, 0) + 1
    return counts
