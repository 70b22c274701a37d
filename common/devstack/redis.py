"""Real redis-server (Debian package `redis-server`) on a free loopback port."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.devstack.base import NativeService, ServiceUnavailable


class RedisService(NativeService):
    name = "redis"

    def __init__(
        self, binary: str | None = None, appendonly: bool = True, appendfsync: str = "everysec"
    ) -> None:
        if appendfsync not in ("always", "everysec", "no"):
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.appendonly = appendonly
        self.appendfsync = appendfsync

    def check_available(self) -> None:
        if not Path(self.binary).exists():
            raise ServiceUnavailable(
                "redis-server not found: run `make setup` (installs the Debian package)"
            )

    def command(self, workdir: Path, port: int) -> list[str]:
        # AOF, fsynced every second: Redis writes each change to the AOF before it replies, so
        # a kill -9 of Redis loses nothing acknowledged, and a host crash at most ~1 s, where
        # snapshots alone would lose everything since the last snapshot. `always` would close
        # that second at a fsync per write (measured here: 17x the latency of a single
        # client); instead the stage 3 manager, which must not commit a Kafka offset before
        # its effect is on disk, waits out everysec's fsync (common/messaging/durability.py).
        # The manager detects the policy, so `appendfsync="always"` works unchanged.
        return [
            self.binary,
            "--port",
            str(port),
            "--bind",
            self.host,
            "--dir",
            str(workdir),
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--daemonize",
            "no",
        ]

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_REDIS_URL": f"redis://{host}:{port}/0"}

    def is_ready(self, host: str, port: int) -> bool:
        import redis

        try:
            return bool(redis.Redis(host=host, port=port, socket_timeout=0.5).ping())
        except redis.RedisError:
            return False
