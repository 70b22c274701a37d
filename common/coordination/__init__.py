"""ZooKeeper coordination (introduced in stage 2): client factory, agent registry, leader
election, and the live view of agents the scheduler places tasks on."""

from common.coordination.paths import LIVE_AGENTS, SCHEDULER_LEADER, agent_node

__all__ = ["LIVE_AGENTS", "SCHEDULER_LEADER", "agent_node"]
