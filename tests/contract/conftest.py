"""The `platform` fixture: one whole stage running on real services, for the contract suite.

Parametrised over every installed stage, so the same lifecycle tests run against stage 1, 2
and 3 alike: only the infrastructure changes, never the task API.
"""

from dataclasses import dataclass

import pytest

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.stages import TOPOLOGY, installed_stages

STAGES = [s for s in installed_stages() if s in TOPOLOGY]


@dataclass
class Platform:
    stage: int
    env: dict[str, str]
    client: TaskClient


@pytest.fixture(params=STAGES, ids=[f"stage{s}" for s in STAGES])
def platform(request, redis_url, start_role):
    stage = request.param
    env = {"TASKLAB_REDIS_URL": redis_url}
    if stage >= 2:
        env.update(request.getfixturevalue("zookeeper_service").env)
        env["TASKLAB_ZK_CHROOT"] = request.getfixturevalue("zk_chroot")
    if stage >= 3:
        env.update(request.getfixturevalue("kafka_service").env)
        env["TASKLAB_KAFKA_NAMESPACE"] = request.getfixturevalue("kafka_namespace")
    for role, count in TOPOLOGY[stage]:
        for n in range(count):
            name = f"{role}-{n + 1}"
            start_role(role, stage, {**env, "TASKLAB_AGENT_ID": name}, name=name)
    return Platform(stage, env, TaskClient(RedisTaskStore(redis_client(redis_url))))
