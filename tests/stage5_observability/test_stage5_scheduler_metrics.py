"""The stage 2 schedulers' operator ports: leadership and epoch, placements, the agents they
see; a leader killed with kill -9 shows as another scheduler leading with a higher epoch, and
an agent killed mid-task as a failover."""

from __future__ import annotations

import pytest
from observability_support import promtool_problems, scrape, wait_ready

from common import keys
from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.testing import eventually

pytestmark = pytest.mark.integration

SCHEDULER_FAMILIES = {
    "tasklab_scheduler_is_leader": "gauge",
    "tasklab_scheduler_epoch": "gauge",
    "tasklab_scheduler_terms_total": "counter",
    "tasklab_scheduler_dispatched_total": "counter",
    "tasklab_scheduler_recovered_total": "counter",
    "tasklab_scheduler_deposed_total": "counter",
    "tasklab_agents_live": "gauge",
    "tasklab_agents_capacity_slots": "gauge",
    "tasklab_agents_used_slots": "gauge",
    "tasklab_queue_depth": "gauge",
    "tasklab_scheduler_fence_epoch": "gauge",
    "tasklab_fenced_writes_rejected_total": "counter",
    "tasklab_redis_up": "gauge",
    "tasklab_role_info": "gauge",
}
# Read from the live-agents view, which a scheduler keeps from its first term on.
AGENT_FAMILIES = (
    "tasklab_agents_live",
    "tasklab_agents_capacity_slots",
    "tasklab_agents_used_slots",
)


@pytest.fixture
def stage2_env(redis_url, zookeeper_service, zk_chroot) -> dict[str, str]:
    return {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_ZK_CHROOT": zk_chroot, **zookeeper_service.env}


def leader_of(addresses: dict[str, str]) -> str | None:
    leading = [n for n, a in addresses.items() if scrape(a).value("tasklab_scheduler_is_leader")]
    assert len(leading) <= 1, f"two leaders at once: {leading}"
    return leading[0] if leading else None


def test_schedulers_show_one_leader_its_epoch_and_what_it_placed(observed_role, stage2_env):
    # Given two schedulers and an agent, each with an operator port
    schedulers = {}
    procs = {}
    for name in ("scheduler-a", "scheduler-b"):
        procs[name], schedulers[name] = observed_role("scheduler", 2, stage2_env, name)
    agent, agent_address = observed_role("agent", 2, stage2_env, "agent-s1")
    for name, address in schedulers.items():
        body = wait_ready(procs[name], address)
        assert {"zookeeper", "leader_known", "redis"} <= set(body["checks"])
    wait_ready(agent, agent_address)
    leader = eventually(lambda: leader_of(schedulers), 15, 0.2, message="one leader")

    # When three tasks run
    client = redis_client(stage2_env["TASKLAB_REDIS_URL"])
    tasks = TaskClient(RedisTaskStore(client))
    ids = [tasks.submit({"taskType": "SHELL", "payload": "true"})[0].task_id for _ in range(3)]
    for task_id in ids:
        assert tasks.wait(task_id, 20).status.value == "SUCCESS"

    # Then the leader says it leads with the epoch Redis fences with, and placed them all
    metrics = scrape(schedulers[leader])
    for name, kind in SCHEDULER_FAMILIES.items():
        assert metrics.families().get(name) == kind, name
    epoch = metrics.value("tasklab_scheduler_epoch")
    assert epoch > 0 and epoch == int(client.get(keys.SCHEDULER_FENCE))
    assert metrics.value("tasklab_scheduler_fence_epoch") == epoch
    assert metrics.value("tasklab_scheduler_dispatched_total") == 3
    assert metrics.value("tasklab_scheduler_terms_total") == 1
    assert metrics.value("tasklab_agents_live") == 1
    assert metrics.value("tasklab_agents_capacity_slots") == 2
    assert metrics.value("tasklab_queue_depth", queue="inbox", agent="agent-s1") == 0
    # ...the standby that it does not, with no epoch of its own
    standby = next(n for n in schedulers if n != leader)
    other = scrape(schedulers[standby])
    assert other.value("tasklab_scheduler_is_leader") == 0
    assert other.value("tasklab_scheduler_epoch") == 0
    assert other.value("tasklab_scheduler_dispatched_total") == 0
    # ...and, keeping no view of the agents before its first term, serves no agents' gauges:
    # a 0 there would read as "no agents" to whoever does not also ask who leads
    for name in AGENT_FAMILIES:
        assert name not in other.families(), name
    # ...and the agent (stage 2: it writes its own outcomes) counted them as finished
    assert scrape(agent_address).value("tasklab_tasks_finished_total", status="SUCCESS") == 3
    for address in (*schedulers.values(), agent_address):
        assert promtool_problems(scrape(address).text) == ""


@pytest.mark.slow
def test_a_killed_leader_and_a_killed_agent_show_as_a_new_epoch_and_a_failover(
    observed_role, stage2_env
):
    # Given two schedulers and two agents, one of them running a long task
    schedulers, procs = {}, {}
    for name in ("scheduler-a", "scheduler-b"):
        procs[name], schedulers[name] = observed_role("scheduler", 2, stage2_env, name)
    agents = {}
    for name in ("agent-k1", "agent-k2"):
        agents[name] = observed_role("agent", 2, stage2_env, name)
        wait_ready(*agents[name])
    leader = eventually(lambda: leader_of(schedulers), 15, 0.2, message="one leader")
    first_epoch = scrape(schedulers[leader]).value("tasklab_scheduler_epoch")

    standby = next(n for n in schedulers if n != leader)
    assert scrape(schedulers[standby]).samples("tasklab_agents_live") == []

    # When the leader is killed with kill -9
    procs[leader].kill()

    # Then the standby leads with a higher epoch once the dead session expires
    def new_epoch() -> float:
        metrics = scrape(schedulers[standby])
        return metrics.value("tasklab_scheduler_is_leader") and metrics.value(
            "tasklab_scheduler_epoch"
        )

    second_epoch = eventually(new_epoch, 20, 0.2, message="the standby leads")
    assert second_epoch > first_epoch
    # and, its view started by that first term, counts both agents
    eventually(
        lambda: scrape(schedulers[standby]).samples("tasklab_agents_live") == [2],
        10,
        0.2,
        message="the new leader's live agents",
    )

    # When an agent running a task is killed with kill -9
    client = redis_client(stage2_env["TASKLAB_REDIS_URL"])
    tasks = TaskClient(RedisTaskStore(client))
    task, _ = tasks.submit({"taskType": "SHELL", "payload": "sleep 30"})
    owner = eventually(
        lambda: tasks.get(task.task_id).status.value == "RUNNING" and tasks.get(task.task_id),
        15,
        message="the long task runs",
    ).agent_id
    agents[owner][0].kill()

    # Then the new leader counts one failover by ZooKeeper that gave one task back
    def failed_over() -> bool:
        metrics = scrape(schedulers[standby])
        return metrics.value("tasklab_failover_requeued_tasks_total", by="zookeeper") == 1

    eventually(failed_over, 20, 0.2, message="the failover is counted")
    assert scrape(schedulers[standby]).value("tasklab_failovers_total", by="zookeeper") == 1
