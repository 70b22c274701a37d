"""One Redis connection pool per URL per process, built on first use.

Pattern: Singleton as a cached factory (see `common.config.settings`). Every part of a process
that talks to the same Redis shares one pool instead of opening its own sockets.
"""

from __future__ import annotations

from functools import lru_cache

from redis import Redis


@lru_cache(maxsize=8)
def redis_client(url: str) -> Redis:
    # health_check_interval: a connection idle behind a NAT or a restarted Redis is PINGed
    # before use rather than failing the first command after the gap.
    return Redis.from_url(url, health_check_interval=30, socket_connect_timeout=5)
