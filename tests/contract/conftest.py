"""The `platform` fixture: one whole stage running on real services, for the contract suite.

Parametrised over every installed stage, so the same lifecycle tests run against stage 1, 2
and 3 alike: only the infrastructure changes, never the task API. What a stage runs (its
backing services and its processes) comes from its own StageSpec, so a new stage joins the
suite by being installed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.base import free_port
from common.stages import installed_stages, load_stage
from common.testing.processes import RoleProcess

STAGES = [s for s in installed_stages() if load_stage(s).topology]


def _redis(request) -> dict[str, str]:
    return {"TASKLAB_REDIS_URL": request.getfixturevalue("redis_url")}


def _zookeeper(request) -> dict[str, str]:
    # Its own chroot per test: tests share one ZooKeeper without seeing each other.
    env = dict(request.getfixturevalue("zookeeper_service").env)
    env["TASKLAB_ZK_CHROOT"] = request.getfixturevalue("zk_chroot")
    return env


def _kafka(request) -> dict[str, str]:
    # Its own topic prefix per test, for the same reason.
    env = dict(request.getfixturevalue("kafka_service").env)
    env["TASKLAB_KAFKA_NAMESPACE"] = request.getfixturevalue("kafka_namespace")
    return env


# Backing service -> the TASKLAB_* settings that point a role at the test's instance of it.
# Keyed by service, not by stage: a new stage built on these services needs nothing here.
SERVICE_ENV: dict[str, Callable[[pytest.FixtureRequest], dict[str, str]]] = {
    "redis": _redis,
    "zookeeper": _zookeeper,
    "kafka": _kafka,
}


@dataclass
class Platform:
    stage: int
    env: dict[str, str]
    client: TaskClient
    processes: dict[str, RoleProcess] = field(default_factory=dict)

    def agent_running(self, task_id: str) -> RoleProcess:
        """The agent process the task is placed on now."""
        return self.processes[self.client.get(task_id).agent_id]


@pytest.fixture(params=STAGES, ids=[f"stage{s}" for s in STAGES])
def platform(request, start_role):
    spec = load_stage(request.param)
    env: dict[str, str] = {}
    for service in spec.services:
        if service not in SERVICE_ENV:
            pytest.fail(f"stage {spec.number} needs {service!r}, which the contract suite lacks")
        env.update(SERVICE_ENV[service](request))
    if "api" in spec.roles:
        # A role serving on a fixed address (the REST API) gets a free port per test, so
        # parallel runs never fight over the configured default.
        env["TASKLAB_API_ADDRESS"] = f"127.0.0.1:{free_port()}"
    processes = {
        name: start_role(role, spec.number, {**env, "TASKLAB_AGENT_ID": name}, name=name)
        for role, name in spec.processes()
    }
    client = TaskClient(RedisTaskStore(redis_client(env["TASKLAB_REDIS_URL"])))
    return Platform(spec.number, env, client, processes)
