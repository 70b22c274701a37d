"""One Redis connection pool per URL per process, built on first use.

Pattern: Singleton as a cached factory (see `common.config.settings`). Every part of a process
that talks to the same Redis shares one pool instead of opening its own sockets.
"""

from __future__ import annotations

from functools import lru_cache

from redis import Redis
from redis._parsers import _HiredisParser
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

# redis-py's own threshold (`Connection._buffer_cutoff`): an argument longer than this is sent
# as a chunk of its own instead of being copied into the command's buffer.
BUFFER_CUTOFF = 6000


@lru_cache(maxsize=8)
def redis_client(url: str) -> Redis:
    return new_redis_client(url)


def new_redis_client(url: str, parser_class: type = _HiredisParser) -> Redis:
    """A client with `redis_client`'s options and a pool of its own.

    `parser_class` is there for bench/redis_client_cpu.py, which weighs redis-py's Python reply
    parser against hiredis's in one run; everything else takes the default (or `redis_client`).
    """
    if parser_class is _HiredisParser and not HIREDIS_AVAILABLE:
        # Said at start-up, in the composition root: redis-py would only say it at the first
        # command, where a role's retry loop would repeat it for ever.
        raise RuntimeError("hiredis is not installed (a dependency in pyproject): `make setup`")
    # health_check_interval: a connection idle behind a NAT or a restarted Redis is PINGed
    # before use rather than failing the first command after the gap.
    # surrogateescape both ways: bytes that are not UTF-8 (a hand-pushed message of garbage)
    # read back as a str that writes back as the very same bytes, so such a message can be
    # dead-lettered and removed by value instead of crashing the reader.
    # Replies are parsed by hiredis, in C: parsing them in Python was a real share of every
    # role's CPU (docs/performance.md, "hiredis for replies, Python for commands"). Commands
    # are still packed in Python, by the packer redis-py uses without hiredis: with hiredis
    # installed redis-py would pack them in C as well, strictly, and a garbage message could
    # no longer be written back (tests/stage1_mvp/test_stage1_bad_bytes.py fails with
    # "surrogates not allowed"). Both parsers give the same Python values for every reply
    # shape the code relies on, errors included (tests/stage1_mvp/test_redis_client.py).
    return Redis.from_url(
        url,
        health_check_interval=30,
        socket_connect_timeout=5,
        # A Redis that is paused or cut off answers nothing: give up on a call after this
        # long, so the caller's retry logic (not a hung thread) decides what happens next.
        # Longer than any blocking command tasklab issues (BLMOVE waits at most ~1 s).
        socket_timeout=10,
        encoding_errors="surrogateescape",
        parser_class=parser_class,
        # One packer for the pool: it keeps no state between calls, so connections (and the
        # threads using them) can share it.
        command_packer=PythonRespSerializer(
            BUFFER_CUTOFF, Encoder("utf-8", "surrogateescape", False).encode
        ),
    )


def as_text(value: object) -> str:
    """A reply as text, bytes that are not UTF-8 kept (see `redis_client`)."""
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)
