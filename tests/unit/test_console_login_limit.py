"""The console login's limit as a policy: what a wrong key costs, what a good one costs, how
long a locked-out address waits. The bucket here is an in-memory one with the token bucket's
rules; the real one, in Redis, is tested in tests/stage5_observability/test_console_login_limit.py.
"""

from __future__ import annotations

import anyio
import pytest

from common.api.console.login_limit import LoginPolicy, LoginThrottle
from common.config import Settings
from common.security.ratelimit import Decision


class BucketsInMemory:
    """RateLimiter.take's contract over a dict, on a clock the test moves."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.now = 0.0
        self.tokens: dict[str, tuple[float, float]] = {}
        self.degraded = False

    def take(self, name: str, cost: int = 1) -> Decision:
        if self.degraded:
            return Decision(True, degraded=True)
        tokens, at = self.tokens.get(name, (float(self.burst), self.now))
        tokens = min(self.burst, tokens + (self.now - at) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self.tokens[name] = (tokens, self.now)
        wait = 0.0 if allowed else (cost - tokens) / self.rate
        return Decision(allowed, wait, int(tokens))


def throttle(failures: int = 3, window: float = 30.0) -> tuple[LoginThrottle, BucketsInMemory]:
    policy = LoginPolicy(failures, window)
    buckets = BucketsInMemory(policy.rate, failures)
    return LoginThrottle(buckets, policy), buckets  # type: ignore[arg-type]


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def test_three_wrong_keys_lock_the_address_and_one_comes_back_after_a_tenth_of_the_window():
    limit, buckets = throttle(failures=3, window=30.0)
    for _ in range(3):
        assert run(limit.blocked, "10.0.0.1") is None
        run(limit.failed, "10.0.0.1")
    assert run(limit.blocked, "10.0.0.1") == 10, "one attempt back every 30 / 3 s, at most"
    assert run(limit.blocked, "10.0.0.2") is None, "another address has its own bucket"
    buckets.now += 10.0
    assert run(limit.blocked, "10.0.0.1") is None


def test_good_keys_spend_nothing_however_many():
    limit, _ = throttle(failures=2)
    for _ in range(50):
        assert run(limit.blocked, "10.0.0.1") is None  # a good key: blocked() only, no failed()


def test_a_bucket_that_cannot_be_asked_lets_the_login_through():
    limit, buckets = throttle(failures=1)
    run(limit.failed, "10.0.0.1")
    buckets.degraded = True
    assert run(limit.blocked, "10.0.0.1") is None


@pytest.mark.parametrize(
    ("failures", "window", "wait"), [(5, 60.0, 12), (3, 1.5, 1), (1, 0.2, 1), (4, 10.0, 3)]
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(failures, window, wait):
    assert LoginPolicy(failures, window).retry_after(Decision(False)) == wait
    assert f"try again in {wait} s" in LoginPolicy(failures, window).message(wait)


def test_the_policy_comes_from_the_rate_limiting_settings_and_is_off_with_them():
    on = Settings(api={"rate_limiting": {"login_failures": 7, "login_window": 70}})
    made = LoginThrottle.from_settings(on, FakeRedis())
    assert (made.policy.failures, made.policy.window) == (7, 70.0)
    assert made.limiter is not None and made.limiter.burst == 7 and made.limiter.rate == 0.1
    off = Settings(api={"rate_limiting": {"enabled": False}})
    assert LoginThrottle.from_settings(off, FakeRedis()).limiter is None


class FakeRedis:
    """What RateLimiter needs of a client when it is made: a script to register."""

    def register_script(self, source: str):
        return lambda **_: [1, 0, 0]
