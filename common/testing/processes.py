"""Run a tasklab role (`tasklab run agent --stage 1`, ...) as a real OS process in a test.

Tests inject faults into these processes themselves: `kill()` is kill -9, `pause()` is SIGSTOP.
Each process gets its own process group, and only PIDs started here are ever signalled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from common.devstack import roles


class RoleProcess(roles.RoleProcess):
    """A role process with the test suite's fast timers and text logs, and fault injectors."""

    def __init__(
        self,
        role: str,
        stage: int,
        env: dict[str, str],
        log_dir: Path,
        name: str | None = None,
    ) -> None:
        test_env = {"TASKLAB_ENV": "test", "TASKLAB_LOG_FORMAT": "text", **env}
        super().__init__(role, stage, test_env, log_dir, name)

    def kill(self) -> None:
        """kill -9 the role and everything it spawned (its tasks die with it)."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM, as `docker stop` or a Kubernetes pod deletion sends it; does not wait."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def request_stop(self) -> None:
        """SIGCONT then SIGTERM, once, without waiting: the first half of `stop_all`. Only once,
        because a second SIGTERM means "now" to some roles (uvicorn force-exits the API)."""
        if self.alive():
            # SIGCONT first: a stopped (SIGSTOPped) role would never act on the SIGTERM.
            os.killpg(self.pid, signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)

    def await_stop(self, deadline: float) -> None:
        """Wait until `deadline` (time.monotonic) for the exit `request_stop` asked for, then
        kill -9 the group, as `stop` does after its own timeout."""
        if self.proc is None:
            return
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.stop()  # the process has exited: this only closes its log file

    def pause(self) -> None:
        os.killpg(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.pid, signal.SIGCONT)


def stop_all(processes: Iterable[RoleProcess], timeout: float = 15.0) -> None:
    """Stop role processes side by side: every one is sent SIGTERM first, then each is waited
    for, all against one deadline. A role's clean stop takes about a second (its claim or poll
    loop wakes, its ZooKeeper session closes, its Kafka consumer leaves the group), so stopping
    a platform one process after the other cost the sum of those seconds on every test."""
    processes = list(processes)
    for proc in processes:
        proc.request_stop()
    deadline = time.monotonic() + timeout
    for proc in processes:
        proc.await_stop(deadline)


def process_alive(pid: int) -> bool:
    """True while `pid` runs; a zombie (killed, not yet reaped by its new parent) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        # Gone before, or between opening and reading its stat file (the read fails with
        # ESRCH): dead either way.
        return False


# A PYTHON_SCRIPT payload that kills the zygote it runs in, and nothing else: if the script was
# not started by a zygote (a fresh-exec fallback, whose parent is the process running the
# test), it refuses, so a fault test can never kill the test runner itself.
KILL_MY_ZYGOTE = (
    "import os, signal, time\n"
    "parent = os.getppid()\n"
    "with open(f'/proc/{parent}/cmdline', 'rb') as fh:\n"
    "    cmdline = fh.read()\n"
    "if b'zygote_server' not in cmdline:\n"
    "    raise SystemExit('not started by a zygote; refusing to kill pid %d' % parent)\n"
    "os.kill(parent, signal.SIGKILL)\n"
)
