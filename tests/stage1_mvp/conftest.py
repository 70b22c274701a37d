import pytest

from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient


@pytest.fixture
def client(redis_client):
    return TaskClient(RedisTaskStore(redis_client))


@pytest.fixture
def agent(start_role, redis_url):
    """Start a stage 1 agent against the test Redis: agent(name, claim="reliable", capacity=1)."""

    def start(name: str = "agent-1", claim: str = "reliable", capacity: int = 1, **env):
        return start_role(
            "agent",
            1,
            {
                "TASKLAB_REDIS_URL": redis_url,
                "TASKLAB_AGENT_ID": name,
                "TASKLAB_AGENT_CLAIM": claim,
                "TASKLAB_AGENT_CAPACITY": str(capacity),
                **{f"TASKLAB_{k.upper()}": str(v) for k, v in env.items()},
            },
            name=name,
        )

    return start
