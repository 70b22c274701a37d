"""How often a caller may call: a token bucket per principal, kept in Redis.

Every API replica takes from the same bucket (`ratelimit:{principal}`, one Lua script that
refills by Redis's clock and takes a token atomically), so a key allowed 50 requests a second
gets 50 across all replicas, not 50 per replica.

When Redis cannot be asked, the limiter fails OPEN: the request is let through and the failure
logged (at most every few seconds). Why open:
- the limit protects capacity; it is not access control. Authentication does not depend on
  Redis and stays enforced, so an outage lets no unknown caller in;
- everything the API does needs Redis anyway: with Redis down a let-through request gets the
  honest answer (503 service-unavailable, Retry-After) from the layer that really failed, where
  failing closed would answer 429 "slow down" to every caller, a wrong diagnosis that sends
  well-behaved clients into backoff and hides the outage;
- one store's hiccup should not become a total outage of the front door, reads included.
The cost: during an outage no caller is limited. The providers' own bounds (worker threads,
maximum concurrent calls) still cap what reaches them. A Redis that hangs rather than refuses
(paused, cut off) is the same outage: the REST link waits at most `redis_timeout` for an
answer, then lets the call through (`unchecked`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from common import keys
from common.adapters.redis_scripts import script_source
from common.observability import get_logger

log = get_logger("tasklab.security.ratelimit")

# A Redis outage is reported once per this many seconds, not once per request.
_WARN_EVERY = 10.0


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0  # seconds until the request would be allowed; 0 when allowed
    remaining: int = 0  # whole tokens left in the bucket after this request
    degraded: bool = False  # Redis did not answer: allowed without a check (fail open)


class RateLimiter:
    """`take(name)` with a sync Redis client, `await take_async(name)` with redis.asyncio."""

    def __init__(self, client: Any, requests_per_second: float, burst: int) -> None:
        if requests_per_second <= 0 or burst < 1:
            raise ValueError("requests_per_second must be > 0 and burst >= 1")
        self.rate = float(requests_per_second)
        self.burst = int(burst)
        self._script = client.register_script(script_source("token_bucket"))
        self.is_async = type(client).__module__.startswith("redis.asyncio")
        self._warned_at = -_WARN_EVERY

    @classmethod
    def from_settings(cls, settings: Any, client: Any) -> RateLimiter:
        limits = settings.api.rate_limiting
        return cls(client, limits.requests_per_second, limits.burst)

    def _args(self, name: str, cost: int) -> dict[str, list]:
        return {"keys": [keys.rate_limit(name)], "args": [repr(self.rate), self.burst, cost]}

    def take(self, name: str, cost: int = 1) -> Decision:
        """Take `cost` tokens if the bucket has them. Cost 0 takes nothing and answers how
        many whole tokens are there (`remaining`): a look that spends nothing."""
        try:
            reply = self._script(**self._args(name, cost))
        except (RedisError, OSError) as exc:
            return self._failed_open(exc)
        return self._decision(reply)

    async def take_async(self, name: str, cost: int = 1) -> Decision:
        try:
            reply = await self._script(**self._args(name, cost))
        except (RedisError, OSError) as exc:
            return self._failed_open(exc)
        return self._decision(reply)

    @staticmethod
    def _decision(reply: list) -> Decision:
        allowed, wait_ms, remaining = (int(x) for x in reply)
        return Decision(bool(allowed), wait_ms / 1000.0, remaining)

    def _failed_open(self, exc: Exception) -> Decision:
        return self.unchecked(str(exc))

    def unchecked(self, why: str) -> Decision:
        """Let a call through without a check (fail open), logging it now and then."""
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning("rate limit not checked, Redis did not answer (letting calls in): %s", why)
        return Decision(True, degraded=True)
