"""One native service: find its binary, lay out a throw-away data dir, spawn, wait until ready.

Pattern: Template Method (introduced in stage 1). `NativeService.start` fixes the order of the
steps; Redis, ZooKeeper and Kafka each fill in only what differs (command line, config file,
readiness probe). Adding a fourth service is one subclass.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path


class ServiceUnavailable(RuntimeError):
    """The service cannot be started here (binary missing, JDK missing, ...)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port that was free a moment ago.

    There is a window between closing this socket and the service binding it; `start` retries
    with a new port if the service fails to come up, which closes that race in practice.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class RunningService:
    """What `tasklab dev down` needs to stop a service, and what a client needs to reach it."""

    name: str
    pid: int
    host: str
    port: int
    workdir: str
    log: str
    env: dict[str, str] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RunningService:
        return cls(**data)

    def alive(self) -> bool:
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        pass
    # Not ours: a service that `tasklab dev up` started (and exited) belongs to init, which
    # reaps it in its own time (a container's init can take seconds). It has exited all the
    # same: `dev down` waited for that reaping on every service it stopped.
    return not _exited_unreaped(pid)


def _exited_unreaped(pid: int) -> bool:
    """True when `pid` is a zombie (state Z in /proc), or vanished while we looked."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        # Reaped between the kill(0) and the read (the read fails with ESRCH); with no /proc
        # at all (macOS), we cannot tell, and the process counts as running, as before.
        return os.path.isdir("/proc/self")


# --8<-- [start:template]
class NativeService(ABC):
    """Template Method for starting a real server as a child process group."""

    name: str = "service"
    host: str = "127.0.0.1"
    start_timeout: float = 30.0
    start_attempts: int = 3

    # -- the steps a subclass fills in -------------------------------------------------
    @abstractmethod
    def check_available(self) -> None:
        """Raise ServiceUnavailable with a one-line reason if this cannot run here."""

    @abstractmethod
    def command(self, workdir: Path, port: int) -> list[str]:
        """Write any config into workdir and return the argv that runs the server."""

    @abstractmethod
    def env_for(self, host: str, port: int) -> dict[str, str]:
        """The TASKLAB_* variables that point a tasklab role at this service."""

    def is_ready(self, host: str, port: int) -> bool:
        return port_open(host, port)

    def process_env(self, workdir: Path) -> dict[str, str] | None:
        return None

    def extra_for(self, workdir: Path, port: int) -> dict[str, object]:
        return {}

    # -- the template ------------------------------------------------------------------
    def start(self, workdir: Path, port: int | None = None) -> RunningService:
        self.check_available()
        last_error = ""
        for _attempt in range(self.start_attempts):
            chosen = port or free_port(self.host)
            svc_dir = workdir / f"{self.name}-{chosen}"
            svc_dir.mkdir(parents=True, exist_ok=True)
            log_path = svc_dir / f"{self.name}.log"
            argv = self.command(svc_dir, chosen)
            with open(log_path, "ab") as log:
                # A new session makes the server the leader of its own process group, so that
                # `stop` can kill it with everything it spawned, and so that a Ctrl-C in the
                # terminal that ran `tasklab dev up` does not take the server down with it.
                proc = subprocess.Popen(
                    argv,
                    cwd=svc_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    env=self.process_env(svc_dir),
                )
            running = RunningService(
                name=self.name,
                pid=proc.pid,
                host=self.host,
                port=chosen,
                workdir=str(svc_dir),
                log=str(log_path),
                env=self.env_for(self.host, chosen),
                extra=self.extra_for(svc_dir, chosen),
            )
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    last_error = f"{self.name} exited with {proc.returncode}; see {log_path}"
                    break
                if self.is_ready(self.host, chosen):
                    return running
                time.sleep(0.1)
            else:
                last_error = (
                    f"{self.name} not ready after {self.start_timeout:.0f}s; see {log_path}"
                )
            self.stop(running)
            if port is not None:
                break
        raise ServiceUnavailable(last_error)

    def stop(self, running: RunningService, grace: float = 10.0) -> None:
        """Stop the process group we started, by its PID: SIGTERM, then SIGKILL."""
        stop_process_group(running.pid, grace)

    def restart(self, running: RunningService, grace: float = 10.0) -> RunningService:
        """Stop the server and start it again on the same port with the same data dir.

        Clients keep their address and reconnect by themselves; what the server had made
        durable is reloaded. That is the failure the fault tests want to exercise. `grace=0`
        is close to a crash: SIGKILL right after SIGTERM.
        """
        svc_dir = Path(running.workdir)
        # `start` names the service dir "<name>-<port>" under the workdir it is given, so
        # passing the parent and the same port lands in the very same directory.
        if svc_dir.name != f"{self.name}-{running.port}":
            raise ValueError(f"{svc_dir} was not created by {type(self).__name__}.start")
        self.stop(running, grace=grace)
        return self.start(svc_dir.parent, port=running.port)


# --8<-- [end:template]


def stop_process_group(pid: int, grace: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not pid_alive(pid):
            return
        time.sleep(0.05)
