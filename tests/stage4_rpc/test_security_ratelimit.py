"""The per-caller token bucket on a real Redis, shared by two limiters as two API replicas
would share it, and what it does when Redis is gone (fails open, then recovers by itself)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

import pytest
import redis
import redis.asyncio

from common import keys
from common.devstack.redis import RedisService
from common.security.ratelimit import RateLimiter
from common.testing import eventually

pytestmark = pytest.mark.integration

SLOW = 0.01  # tokens per second: nothing refills within a test


def replica(url: str, rate: float = SLOW, burst: int = 5) -> RateLimiter:
    # Each replica its own client (its own connection pool), as two API processes have.
    return RateLimiter(redis.Redis.from_url(url, socket_timeout=1.0), rate, burst)


def test_two_replicas_spend_one_bucket_per_caller(redis_url):
    a, b = replica(redis_url), replica(redis_url)
    # Given a burst of 5, taken alternately through two replicas
    decisions = [(a if i % 2 else b).take("key:alice") for i in range(8)]
    # Then 5 in all are allowed, not 5 per replica
    assert [d.allowed for d in decisions] == [True] * 5 + [False] * 3
    assert [d.remaining for d in decisions[:5]] == [4, 3, 2, 1, 0]
    refused = decisions[-1]
    assert 0 < refused.retry_after <= 1 / SLOW and not refused.degraded


def test_each_caller_has_its_own_bucket(redis_url):
    limiter = replica(redis_url, burst=2)
    assert [limiter.take("key:alice").allowed for _ in range(3)] == [True, True, False]
    assert limiter.take("key:bob").allowed, "alice's flood does not spend bob's tokens"


def test_concurrent_takes_through_two_replicas_never_overspend(redis_url):
    a, b = replica(redis_url, burst=10), replica(redis_url, burst=10)
    allowed: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def hammer(limiter: RateLimiter) -> None:
        start.wait(5)
        for _ in range(10):
            decision = limiter.take("key:crowd")
            with lock:
                allowed.append(decision.allowed)

    threads = [threading.Thread(target=hammer, args=(x,)) for x in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # 80 takes at once against a burst of 10: the script is atomic, so exactly 10 win
    assert len(allowed) == 80 and allowed.count(True) == 10


def test_an_empty_bucket_refills_at_the_configured_rate(redis_url):
    limiter = replica(redis_url, rate=20.0, burst=1)
    assert limiter.take("key:alice").allowed
    refused = limiter.take("key:alice")
    assert not refused.allowed and 0 < refused.retry_after <= 0.05
    eventually(lambda: limiter.take("key:alice").allowed, 2, message="a token again")


def test_a_bucket_expires_once_it_would_be_full_again(redis_url, redis_client):
    limiter = replica(redis_url, rate=10.0, burst=5)
    limiter.take("key:alice")
    ttl_ms = redis_client.pttl(keys.rate_limit("key:alice"))
    assert 0 < ttl_ms <= 5 / 10.0 * 1000 + 1000, "no bucket is kept forever"


def test_the_limiter_works_on_an_asyncio_client_as_well(redis_url):
    async def takes() -> list[bool]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            limiter = RateLimiter(client, SLOW, 2)
            assert limiter.is_async
            return [(await limiter.take_async("key:alice")).allowed for _ in range(3)]
        finally:
            await client.aclose()

    assert asyncio.run(takes()) == [True, True, False]


@pytest.fixture
def own_redis(tmp_path):
    service = RedisService()
    running = service.start(tmp_path)
    state = {"running": running}
    yield service, state
    service.stop(state["running"])


def test_with_redis_gone_the_limiter_fails_open_and_recovers_by_itself(own_redis, caplog):
    service, state = own_redis
    url = state["running"].env["TASKLAB_REDIS_URL"]
    limiter = replica(url, burst=1)
    # Given a caller whose bucket is empty
    assert limiter.take("key:alice").allowed
    assert not limiter.take("key:alice").allowed
    # When Redis dies (kill -9)
    os.kill(state["running"].pid, signal.SIGKILL)
    eventually(lambda: not state["running"].alive(), 5, message="redis gone")
    # Then calls are let through, marked as unchecked, and the outage is logged once
    with caplog.at_level("WARNING", logger="tasklab.security.ratelimit"):
        during = [limiter.take("key:alice") for _ in range(3)]
    assert all(d.allowed and d.degraded for d in during)
    assert len([r for r in caplog.records if "rate limit not checked" in r.message]) == 1
    # And when Redis is back (empty: it kept nothing), limiting resumes without a restart
    state["running"] = service.restart(state["running"], grace=0)  # same port, same client
    eventually(lambda: not limiter.take("key:alice").degraded, 10, message="checked again")
    assert not limiter.take("key:alice").allowed, "the new bucket's single token is spent"
