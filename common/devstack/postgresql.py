"""Real PostgreSQL (Debian package `postgresql`, version 15 on Debian 12) on a free loopback port.

The archive of final states (common/archive) lives in it. Like Redis here, it is a throw-away
cluster: `initdb` into the service dir, a `postgres` server on a free loopback port, its unix
socket in the service dir too (never /var/run/postgresql, which belongs to the system's own
cluster), fsync left on (the archive's point is that a row it committed survives a crash; the
fault tests kill -9 it and count rows).

PostgreSQL refuses to run as root. These machines (and many containers) run as root, so when we
are root, and only then, `initdb` and `postgres` run as the unprivileged `postgres` user the
Debian package creates, through `runuser`; the service dir is handed to that user. Everything
that user needs to reach must be traversable by it (a pytest tmp dir under a 0700
/tmp/pytest-of-root is not: the fixture makes its own dir for that reason).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from common.devstack.base import (
    NativeService,
    RunningService,
    ServiceUnavailable,
    pid_alive,
    stop_process_group,
)

DATABASE = "tasklab"
USER = "tasklab"
# The major version of the Debian package; the compose file's image must match it
# (tests/unit/test_archive_versions.py).
MAJOR = 15


def find_bindir(major: int | None = None) -> Path | None:
    """Debian keeps each major version's binaries in /usr/lib/postgresql/N/bin."""
    wanted = [f"/usr/lib/postgresql/{major}/bin"] if major else []
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for candidate in [*wanted, *reversed(found)]:
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PostgresService(NativeService):
    name = "postgresql"
    start_timeout = 60.0

    def __init__(self, bindir: str | None = None, run_as: str = "postgres") -> None:
        found = Path(bindir) if bindir else find_bindir(MAJOR)
        self.bindir = found
        self.run_as = run_as

    # -- running as someone else when we are root ---------------------------------------
    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _argv(self, *argv: str) -> list[str]:
        # PostgreSQL exits with "root execution of the PostgreSQL server is not permitted":
        # when (and only when) we are root, drop to the package's unprivileged user.
        if self.as_root:
            return ["runuser", "-u", self.run_as, "--", *argv]
        return list(argv)

    def _hand_over(self, path: Path) -> None:
        if not self.as_root:
            return
        entry = pwd.getpwnam(self.run_as)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in dirs + files:
                os.chown(
                    os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False
                )

    # -- the template's steps -----------------------------------------------------------
    def check_available(self) -> None:
        if self.bindir is None or not (self.bindir / "postgres").exists():
            raise ServiceUnavailable(
                "PostgreSQL not found: run `make setup` (installs the Debian package postgresql)"
            )
        if self.as_root:
            try:
                pwd.getpwnam(self.run_as)
            except KeyError:
                raise ServiceUnavailable(
                    f"running as root, and there is no {self.run_as!r} user to run PostgreSQL "
                    "as (the Debian package creates it)"
                ) from None

    def command(self, workdir: Path, port: int) -> list[str]:
        if self.as_root and subprocess.run(self._argv("test", "-x", str(workdir))).returncode:
            raise ServiceUnavailable(
                f"PostgreSQL runs as the {self.run_as!r} user here (we are root), who cannot "
                f"reach {workdir}: every parent must be searchable by others (chmod o+x), or "
                "use a state dir that is (--state-dir)"
            )
        data = workdir / "data"
        sockets = workdir / "sockets"
        sockets.mkdir(exist_ok=True)
        # A Unix socket's path is at most 107 bytes; in a deep state dir (a test's temporary
        # one) PostgreSQL would refuse to start over it. Every client here connects over TCP
        # (the DSN names host and port), so the socket is left out rather than the server.
        socket_dir = str(sockets) if len(f"{sockets}/.s.PGSQL.{port}") <= 107 else ""
        if not (data / "PG_VERSION").exists():
            self._initdb(workdir, data)
        self._hand_over(workdir)
        return self._argv(
            str(self.bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-h",
            self.host,
            "-k",
            socket_dir,
            # fsync on (the default, said out loud): a committed row survives kill -9 and a
            # host crash, which the archive promises.
            "-c",
            "fsync=on",
            "-c",
            "synchronous_commit=on",
            "-c",
            "max_connections=100",
            "-c",
            "shared_buffers=32MB",
        )

    def _initdb(self, workdir: Path, data: Path) -> None:
        data.mkdir(exist_ok=True)
        self._hand_over(workdir)
        # trust on loopback and the private socket: a throw-away dev cluster, reachable only
        # from this machine. The role and database are the archive's.
        done = subprocess.run(
            self._argv(
                str(self.bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ),
            capture_output=True,
            text=True,
            cwd=workdir,
            timeout=120,
        )
        if done.returncode != 0:
            raise ServiceUnavailable(f"initdb failed: {(done.stderr or done.stdout).strip()}")

    def extra_for(self, workdir: Path, port: int) -> dict[str, object]:
        return {"data": str(workdir / "data"), "sockets": str(workdir / "sockets")}

    def stop(self, running: RunningService, grace: float = 10.0) -> None:
        """Fast shutdown (SIGINT to the postmaster), then the process group by its PID.

        SIGTERM is PostgreSQL's *smart* shutdown, which waits for every client to disconnect:
        with a role still connected, that is the whole grace period and then a SIGKILL.
        """
        postmaster = postmaster_pid(running)
        if postmaster is not None:
            try:
                os.kill(postmaster, signal.SIGINT)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + grace
            while pid_alive(postmaster) and time.monotonic() < deadline:
                time.sleep(0.05)
        stop_process_group(running.pid, grace)

    def process_env(self, workdir: Path) -> dict[str, str] | None:
        # A locale the server can always load (the machine's may name one not generated).
        return {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_ARCHIVE_DSN": dsn(host, port, DATABASE)}

    def is_ready(self, host: str, port: int) -> bool:
        # A real connection, not the port: the port opens before recovery is done, and the
        # database is created on the first ready connection.
        import psycopg

        try:
            with psycopg.connect(dsn(host, port, "postgres"), connect_timeout=2) as conn:
                conn.autocommit = True
                exists = conn.execute(
                    "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                ).fetchone()
                if not exists:
                    conn.execute(f'CREATE DATABASE "{DATABASE}"')
            return True
        except psycopg.Error:
            return False


def postmaster_pid(running: RunningService) -> int | None:
    """The server's own PID (the service's PID is `runuser`'s when we run as root).

    From postmaster.pid's first line; None when the file is gone (a clean stop removes it).
    """
    try:
        first = (Path(running.workdir) / "data" / "postmaster.pid").read_text().split("\n")[0]
        pid = int(first)
        # A file left by a killed server may name a PID reused since by another program:
        # only a postgres process counts.
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (OSError, ValueError):
        return None
    return pid if command.endswith(b"postgres") else None


def dsn(host: str, port: int, database: str = DATABASE) -> str:
    return f"postgresql://{USER}@{host}:{port}/{database}"
