"""Every ZooKeeper path tasklab uses, relative to the chroot.

A chroot (`TASKLAB_ZK_CHROOT=/tasklab-dev`) lets several tasklab installations, or parallel
tests, share one ensemble without seeing each other's nodes.
"""

LIVE_AGENTS = "/live-agents"  # one ephemeral child per live agent
SCHEDULER_LEADER = "/scheduler-leader"  # the election's sequential ephemeral contenders
CHECKER_LEADER = "/checker-leader"  # the guarantee checkers' election (stage 5)
# One ephemeral child per partition of task-dispatch-topic an agent reads alone (stage 3 on).
DISPATCH_PARTITIONS = "/dispatch-partitions"


def agent_node(agent_id: str) -> str:
    return f"{LIVE_AGENTS}/{agent_id}"


def dispatch_partition_node(partition: int) -> str:
    return f"{DISPATCH_PARTITIONS}/{partition}"
