"""The manager's durability barrier asks the real server what it can promise.

Redis 7.0 (Debian bookworm) has no WAITAOF; the barrier must then tell `appendfsync always`
(nothing to wait for) from `everysec` (wait out the fsync) from no AOF at all (nothing helps).
"""

from __future__ import annotations

import pytest
import redis

from common.devstack.base import ServiceUnavailable
from common.devstack.redis import RedisService
from common.messaging.durability import EVERYSEC_HORIZON, RedisDurability
from common.testing.pytest_plugin import unavailable


@pytest.fixture
def own_redis(tmp_path):
    """start(appendonly=..., appendfsync=...) -> a client of a Redis started for this test."""
    started = []

    def start(**config) -> redis.Redis:
        service = RedisService(**config)
        try:
            running = service.start(tmp_path / f"redis-{len(started)}")
        except ServiceUnavailable as exc:
            unavailable(f"redis: {exc}")
        started.append((service, running))
        return redis.Redis.from_url(running.env["TASKLAB_REDIS_URL"])

    yield start
    for service, running in started:
        service.stop(running)


@pytest.mark.parametrize(
    ("config", "mode", "horizon"),
    [
        ({"appendfsync": "everysec"}, "fsync-everysec", EVERYSEC_HORIZON),
        ({"appendfsync": "always"}, "fsync-always", 0.0),
        ({"appendonly": False}, "none", 0.0),
    ],
)
def test_the_barrier_detects_what_the_server_can_promise_and_says_it(
    own_redis, config, mode, horizon, caplog
):
    client = own_redis(**config)
    if _has_waitaof(client) and mode != "none":
        # A Redis with WAITAOF (7.2+) is asked directly, whatever its fsync policy.
        mode, horizon = "waitaof", 0.0
    barrier = RedisDurability(client)
    with caplog.at_level("INFO", logger="tasklab.durability"):
        assert barrier.detect() == mode
        barrier.detect()  # asked once, said once
    assert barrier.horizon == horizon
    assert barrier.durable(now=100.0)
    [said] = [r.getMessage() for r in caplog.records if r.name == "tasklab.durability"]
    assert said.startswith(f"durability ({mode}): ")


def test_a_redis_error_while_detecting_is_raised_so_the_consumer_holds_offsets_back(own_redis):
    client = own_redis()
    port = client.connection_pool.connection_kwargs["port"]
    client.shutdown(nosave=True)
    barrier = RedisDurability(redis.Redis(port=port, socket_timeout=0.5))
    with pytest.raises(redis.ConnectionError):
        barrier.durable(now=1.0)
    assert barrier.mode is None  # asked again next time


def _has_waitaof(client: redis.Redis) -> bool:
    major, minor = (int(x) for x in client.info("server")["redis_version"].split(".")[:2])
    return (major, minor) >= (7, 2)
