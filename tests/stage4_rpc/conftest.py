"""Stage 4 fixtures: the stage 3 platform started once per test module (its roles take
seconds to start), TaskService providers as real `tasklab run rpc --stage 4` processes on
ports the test chooses (so a test knows which process serves which address), and the client
proxy discovering them in the module's own ZooKeeper chroot.

Each module gets its own Redis database, ZooKeeper chroot and Kafka namespace, so modules
share the session's services without seeing each other, and no per-test flush of another
fixture touches this module's platform.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from rpc_support import Stage4

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.rpc.proxy import TaskServiceProxy
from common.testing.platforms import stage4_environment

pytestmark = pytest.mark.integration

# The platform under the front door, smaller than the stage's topology to spare two cores.
# A module may declare its own PLATFORM_ROLES (one that starts its agents itself, say).
PLATFORM_ROLES = (("scheduler", 1), ("agent", 2), ("manager", 1))
STAGE4_DB = 4  # other suites flush database 0 per test; this module's platform lives on


@pytest.fixture(scope="module")
def stage4(
    request, redis_service, zookeeper_service, kafka_service, tmp_path_factory
) -> Iterator[Stage4]:
    url = redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{STAGE4_DB}"
    client = redis_client(url)
    client.flushdb()
    env, zk = stage4_environment(url, zookeeper_service, kafka_service, "s4")
    log_dir = tmp_path_factory.mktemp("stage4-roles")
    platform = Stage4(env, log_dir, zk, tasks=TaskClient(RedisTaskStore(client)))
    try:
        for role, count in getattr(request.module, "PLATFORM_ROLES", PLATFORM_ROLES):
            for n in range(count):
                platform.start(role, f"{role}-{n + 1}")
        yield platform
    finally:
        platform.stop_all()
        zk.stop()
        zk.close()


@pytest.fixture(scope="module")
def rest(stage4: Stage4) -> str:
    """The REST API (a real `tasklab run api` process) over two providers: its base URL."""
    stage4.start_provider("rpc-rest-a")
    stage4.start_provider("rpc-rest-b")
    return stage4.start_api("api-1")


@pytest.fixture(scope="module")
def http(rest: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest, timeout=30.0) as client:
        yield client


@pytest.fixture(scope="module")
def proxy(stage4: Stage4) -> Iterator[TaskServiceProxy]:
    proxy = TaskServiceProxy(stage4.zk, default_timeout=20.0).start()
    yield proxy
    proxy.close()
