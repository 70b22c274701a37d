"""How many wrong keys the console's login takes from one client address before it waits.

Pattern: Token Bucket (stage 4's rate limiter, reused: the same RateLimiter, the same
token_bucket.lua, the same Redis). A bucket per client address holds `login_failures` tokens and
refills one every `login_window / login_failures` seconds; only a failed login spends one. A
login is refused (429 with Retry-After) while its address's bucket is empty, whatever key it
carries: a guess that is right must look no different from one that is wrong, or the limit
would tell a guesser which guess was right. A good key spends nothing, so operators who log in
often are never slowed, and once the bucket has refilled a good key works again.

Why per address and not per key prefix: keys have no public part (a key is named only by the
fingerprint of all of it), so a "prefix" of a guess is whatever the guesser chose; a bucket per
prefix would only let anyone lock a real operator out by sending wrong keys that start like
theirs. Behind a proxy the address is the one uvicorn reports (its proxy-headers setting
decides whether X-Forwarded-For counts).

When Redis does not answer, the login is let through, as the API's rate limiter does (fail
open, common/security/ratelimit.py): keys are long random secrets, so the bucket slows a
guesser down rather than being what keeps one out, and during an outage the console is where
an operator looks first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import anyio

from common.security.ratelimit import Decision, RateLimiter

BUCKET_PREFIX = "console-login:"


@dataclass(frozen=True)
class LoginPolicy:
    """`failures` wrong keys in a row, then one more every `window / failures` seconds."""

    failures: int = 5
    window: float = 60.0

    @property
    def rate(self) -> float:
        return self.failures / self.window

    def retry_after(self, decision: Decision) -> int:
        """Whole seconds to wait (RFC 9110: delay-seconds), rounded up, at least 1.

        A look at an empty bucket says only that less than one token is left, not how much
        less: the wait is at most the time one token takes to come back.
        """
        return max(1, math.ceil(decision.retry_after or 1 / self.rate))

    def message(self, wait: int) -> str:
        return (
            f"Too many wrong keys from your address ({self.failures} in "
            f"{self.window:g} s): try again in {wait} s."
        )


class LoginThrottle:
    """`await blocked(address)` before a login is checked, `await failed(address)` after a
    wrong key. `limiter` None: no limit (rate limiting off, or auth off)."""

    def __init__(
        self, limiter: RateLimiter | None, policy: LoginPolicy, timeout: float = 0.5
    ) -> None:
        self.limiter = limiter
        self.policy = policy
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Any, redis: Any) -> LoginThrottle:
        limits = settings.api.rate_limiting
        policy = LoginPolicy(limits.login_failures, limits.login_window)
        if not limits.enabled:
            return cls(None, policy)
        limiter = RateLimiter(redis, policy.rate, policy.failures)
        return cls(limiter, policy, limits.redis_timeout)

    @staticmethod
    def bucket(address: str) -> str:
        return BUCKET_PREFIX + (address or "unknown")

    async def _take(self, address: str, cost: int) -> Decision | None:
        if self.limiter is None:
            return None
        decision = None
        # A Redis that hangs is the outage a refusing one is: wait at most `timeout`, then
        # let the login through (the sync client runs in a thread of its own meanwhile).
        with anyio.move_on_after(self.timeout):
            decision = await anyio.to_thread.run_sync(
                self.limiter.take, self.bucket(address), cost, abandon_on_cancel=True
            )
        return decision

    async def blocked(self, address: str) -> int | None:
        """Seconds to wait if this address may not try a key now, else None. Spends nothing."""
        decision = await self._take(address, 0)
        if decision is None or decision.degraded or decision.remaining >= 1:
            return None
        return self.policy.retry_after(decision)

    async def failed(self, address: str) -> None:
        """A wrong key from this address: one token spent."""
        await self._take(address, 1)
