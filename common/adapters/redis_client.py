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
    # surrogateescape both ways: bytes that are not UTF-8 (a hand-pushed message of garbage)
    # read back as a str that writes back as the very same bytes, so such a message can be
    # dead-lettered and removed by value instead of crashing the reader. This is also why
    # hiredis is not installed: with it, redis-py packs commands in C, strictly, and a
    # garbage message can no longer be written back (tests/stage1_mvp/test_stage1_bad_bytes.py
    # fails with "surrogates not allowed").
    return Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=5,
        # A Redis that is paused or cut off answers nothing: give up on a call after this
        # long, so the caller's retry logic (not a hung thread) decides what happens next.
        # Longer than any blocking command tasklab issues (BLMOVE waits at most ~1 s).
        socket_timeout=10,
        encoding_errors="surrogateescape",
    )


def as_text(value: object) -> str:
    """A reply as text, bytes that are not UTF-8 kept (see `redis_client`)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
