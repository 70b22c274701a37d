"""Real VictoriaLogs (built from its Go module by `make setup`) on a free loopback port.

The log store of stage 5: every role ships its JSON log lines to it
(common/observability/logshipping.py) and `tasklab logs --all --task ID` reads them back with
LogsQL. Its data lives in the service dir and goes with it, like Prometheus's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from common.devstack.base import NativeService, ServiceUnavailable
from common.devstack.prometheus import http_ok

# The Makefile builds this version, compose runs its official image: one version in three
# places, checked by tests/unit/test_logs_versions.py.
VICTORIALOGS_VERSION = "v1.52.1"
BINARY_ENV = "TASKLAB_VICTORIALOGS_BIN"


def default_binary() -> str:
    """Where `make setup` puts the binary, else one on PATH, else the expected path (for the
    error message)."""
    explicit = os.environ.get(BINARY_ENV)
    if explicit:
        return explicit
    built = (
        Path(__file__).resolve().parents[2]
        / ".cache"
        / "victorialogs"
        / VICTORIALOGS_VERSION
        / "victoria-logs"
    )
    if built.exists():
        return str(built)
    return shutil.which("victoria-logs") or str(built)


class VictoriaLogsService(NativeService):
    name = "victorialogs"

    def __init__(self, binary: str | None = None, retention: str = "7d") -> None:
        self.binary = binary or default_binary()
        self.retention = retention

    def check_available(self) -> None:
        if not Path(self.binary).exists():
            raise ServiceUnavailable(
                f"victoria-logs not found at {self.binary}: run `make setup` (builds "
                f"VictoriaLogs {VICTORIALOGS_VERSION} from its Go module)"
            )

    def command(self, workdir: Path, port: int) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{port}",
            f"-storageDataPath={workdir / 'data'}",
            f"-retentionPeriod={self.retention}",
            # Its own log in one JSON line per event too, into the service's log file.
            "-loggerFormat=json",
        ]

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_LOGS_URL": f"http://{host}:{port}"}

    def is_ready(self, host: str, port: int) -> bool:
        # /health answers "OK" once storage is open; the port opens at the same moment, but
        # the probe is what compose's healthcheck asks too.
        return http_ok(f"http://{host}:{port}/health")
