"""Break it (e): kill -9 Redis. With AOF (fsync every second) acknowledged tasks survive; with
snapshots only, everything since the last snapshot is gone.
"""

import time

import pytest
import redis

from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.redis import RedisService

# appendfsync everysec: a write is on disk at most ~1 s after it was acknowledged. Waiting past
# that window is the contract under test, not a guess at when something eventually happens.
FSYNC_WINDOW = 1.5


class CrashableRedis:
    def __init__(self, workdir, appendonly: bool) -> None:
        self.service = RedisService(appendonly=appendonly)
        self.running = self.service.start(workdir)

    @property
    def url(self) -> str:
        return self.running.env["TASKLAB_REDIS_URL"]

    def crash_and_restart(self) -> redis.Redis:
        # SIGKILL right after SIGTERM gives Redis no time for a clean save: a crash.
        self.running = self.service.restart(self.running, grace=0)
        return redis.Redis.from_url(self.url)


@pytest.fixture
def crashable_redis(tmp_path):
    started: list[CrashableRedis] = []

    def start(appendonly: bool) -> CrashableRedis:
        started.append(CrashableRedis(tmp_path, appendonly))
        return started[-1]

    yield start
    for server in started:
        server.service.stop(server.running)


def submit_one(url: str) -> str:
    client = TaskClient(RedisTaskStore(redis.Redis.from_url(url)))
    task, _ = client.submit({"taskType": "SHELL", "payload": "echo I survive a crash"})
    return task.task_id


def test_a_task_acknowledged_before_a_redis_crash_survives_with_aof(crashable_redis):
    # Given Redis with AOF and a task acknowledged more than one fsync window ago
    server = crashable_redis(appendonly=True)
    task_id = submit_one(server.url)
    time.sleep(FSYNC_WINDOW)
    # When Redis is killed -9 and started again on the same data dir
    r = server.crash_and_restart()
    # Then the task and its queue entry are still there
    assert r.hget(f"task:{task_id}", "status") == b"PENDING"
    assert r.llen("queue:pending") == 1


def test_without_aof_a_redis_crash_loses_every_acknowledged_task(crashable_redis):
    # Given Redis with neither AOF nor a snapshot since the task was acknowledged
    server = crashable_redis(appendonly=False)
    task_id = submit_one(server.url)
    time.sleep(FSYNC_WINDOW)
    # When Redis is killed -9 and started again
    r = server.crash_and_restart()
    # Then the acknowledged task is gone
    assert not r.exists(f"task:{task_id}")
    assert r.llen("queue:pending") == 0
