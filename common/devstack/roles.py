"""Run a tasklab role (`tasklab run agent --stage 1`, ...) as a real OS process.

The demo, the benchmark and the tests start a stage's roles this way. Each process gets its own
process group, so stopping it also stops the tasks it spawned, and only PIDs started here are
ever signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


class RoleProcess:
    def __init__(
        self,
        role: str,
        stage: int,
        env: dict[str, str],
        log_dir: Path,
        name: str | None = None,
    ) -> None:
        self.role = role
        self.stage = stage
        self.name = name or f"{role}-{stage}"
        # The process's name on its log lines, as in the logs store (`tasklab logs --all`).
        self.env = {**os.environ, "TASKLAB_PROCESS_NAME": self.name, **env}
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RoleProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "common.cli.main", "run", self.role, "--stage", str(self.stage)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.alive():
            try:
                # SIGCONT first: a stopped (SIGSTOPped) role would never act on the SIGTERM.
                os.killpg(self.pid, signal.SIGCONT)
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
