"""Real redis-server (Debian package `redis-server`) on a free loopback port."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.devstack.base import NativeService, ServiceUnavailable


class RedisService(NativeService):
    name = "redis"

    def __init__(self, binary: str | None = None, appendonly: bool = True) -> None:
        self.binary = binary or shutil.which("redis-server") or "/usr/bin/redis-server"
        self.appendonly = appendonly

    def check_available(self) -> None:
        if not Path(self.binary).exists():
            raise ServiceUnavailable(
                "redis-server not found: run `make setup` (installs the Debian package)"
            )

    def command(self, workdir: Path, port: int) -> list[str]:
        # AOF with fsync every second: a kill -9 of Redis loses at most ~1 s of acknowledged
        # tasks, where snapshots alone would lose everything since the last snapshot.
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
            "everysec",
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
