"""Real single-node ZooKeeper (Debian package `zookeeper`) on a free loopback port.

The JVM is launched directly rather than through `zkServer.sh start-foreground`: the script
sources /etc/zookeeper/conf, whose log4j setup writes to /var/log/zookeeper, and it offers no
way to bound the heap per instance. Running `ZooKeeperServerMain` ourselves keeps every byte
the server writes (config, data, logs) inside the throw-away service dir.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from common.devstack.base import NativeService, ServiceUnavailable

# Where the Debian packages `libzookeeper-java`, `libslf4j-java` and `liblog4j1.2-java` put
# their jars. zookeeper.jar's manifest Class-Path names its own dependencies (netty, jute,
# jackson, ...) by absolute path, which is how the Debian scripts run it with a one-jar
# classpath; we only add the slf4j binding, because the manifest leaves logging unbound.
DEBIAN_JAR_DIR = Path("/usr/share/java")
REQUIRED_JARS = ("zookeeper.jar", "zookeeper-jute.jar", "slf4j-log4j12.jar", "log4j-1.2.jar")

# Standalone entry point: QuorumPeerMain would only parse the config, notice there is a single
# server and hand over to this class anyway.
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"

# log4j 1 writes to the console; base.NativeService already redirects the process's stdout
# and stderr to <service dir>/zookeeper.log, so JVM crashes and server logs share one file.
LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p [%t] %c{1} - %m%n
"""

# Generous upper bound so a normal run can ask for a 30 s session; ZooKeeper silently clamps
# a requested timeout into [minSessionTimeout, maxSessionTimeout].
MAX_SESSION_TIMEOUT_MS = 60_000


def four_letter_word(host: str, port: int, word: str, timeout: float = 0.5) -> str:
    """Send one ZooKeeper four-letter command and return the whole reply ('' on failure).

    The server answers and then closes the connection, so reading to EOF is the framing.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(word.encode("ascii"))
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
    except OSError:
        return ""
    return b"".join(chunks).decode("utf-8", errors="replace")


class ZooKeeperService(NativeService):
    name = "zookeeper"

    def __init__(self, tick_time_ms: int = 200, java_heap: str = "256m") -> None:
        # ZooKeeper measures everything about sessions in ticks: the shortest session it grants
        # is 2 ticks and it checks for expired sessions once per tick. The 2000 ms default
        # would forbid the 2-4 s sessions that let tests watch an agent die in seconds, and
        # would make expiry land up to one tick late.
        self.tick_time_ms = tick_time_ms
        self.java_heap = java_heap
        java_home = os.environ.get("JAVA_HOME")
        candidate = Path(java_home, "bin", "java") if java_home else None
        if candidate is not None and candidate.exists():
            self.java = str(candidate)
        else:
            self.java = shutil.which("java") or "/usr/bin/java"
        self.jar_dir = DEBIAN_JAR_DIR

    @property
    def min_session_timeout_ms(self) -> int:
        return 2 * self.tick_time_ms

    @property
    def max_session_timeout_ms(self) -> int:
        return max(20 * self.tick_time_ms, MAX_SESSION_TIMEOUT_MS)

    def check_available(self) -> None:
        if not Path(self.java).exists():
            raise ServiceUnavailable(
                "java not found (ZooKeeper needs a JDK): run `make setup` or set JAVA_HOME"
            )
        missing = [jar for jar in REQUIRED_JARS if not (self.jar_dir / jar).exists()]
        if missing:
            raise ServiceUnavailable(
                f"ZooKeeper jars missing from {self.jar_dir} ({', '.join(missing)}): "
                "run `make setup` (installs the Debian package `zookeeper`)"
            )

    def config_text(self, workdir: Path, port: int) -> str:
        lines = [
            f"tickTime={self.tick_time_ms}",
            f"minSessionTimeout={self.min_session_timeout_ms}",
            f"maxSessionTimeout={self.max_session_timeout_ms}",
            f"dataDir={workdir / 'data'}",
            f"clientPort={port}",
            # Loopback only: a dev server with no auth must not be reachable from the network.
            f"clientPortAddress={self.host}",
            # The embedded Jetty admin server would grab port 8080 and clash between instances.
            "admin.enableServer=false",
            # Four-letter words give a readiness probe and cheap debugging (`echo mntr | nc`);
            # `cons` lists each session with the timeout the server actually granted it.
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons",
            # Every agent and scheduler in a local run connects from 127.0.0.1; the default cap
            # of 60 connections per IP would start refusing them in bigger demos.
            "maxClientCnxns=0",
            # The data dir is throw-away. Without fsync a transaction still reaches the page
            # cache before the client is acknowledged, so it survives a kill of the server (what
            # the tests do) and is lost only if the machine itself crashes.
            "forceSync=no",
            # Transaction logs are pre-allocated in 64 MB blocks by default; 4 MB is plenty.
            "preAllocSize=4096",
        ]
        return "\n".join(lines) + "\n"

    def command(self, workdir: Path, port: int) -> list[str]:
        (workdir / "data").mkdir(parents=True, exist_ok=True)
        cfg = workdir / "zoo.cfg"
        cfg.write_text(self.config_text(workdir, port))
        log4j = workdir / "log4j.properties"
        log4j.write_text(LOG4J_PROPERTIES)
        classpath = os.pathsep.join(str(self.jar_dir / jar) for jar in REQUIRED_JARS)
        return [
            self.java,
            f"-Xmx{self.java_heap}",
            # A small coordination server: the serial collector starts fastest and has the
            # smallest footprint; no GC pause here is long enough to threaten a session.
            "-XX:+UseSerialGC",
            # No /tmp/hsperfdata_<user> file: everything the server writes stays in workdir.
            "-XX:-UsePerfData",
            f"-Djava.io.tmpdir={workdir}",
            f"-Dlog4j.configuration={log4j.as_uri()}",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-cp",
            classpath,
            MAIN_CLASS,
            str(cfg),
        ]

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_ZK_HOSTS": f"{host}:{port}"}

    def extra_for(self, workdir: Path, port: int) -> dict[str, object]:
        return {
            "tick_time_ms": self.tick_time_ms,
            "min_session_timeout_ms": self.min_session_timeout_ms,
            "max_session_timeout_ms": self.max_session_timeout_ms,
        }

    def is_ready(self, host: str, port: int) -> bool:
        # The client port opens before the database is loaded, and `ruok` answers "imok" even
        # then. `srvr` reports the mode only once the server is serving requests, so a session
        # opened right after this returns True is accepted rather than refused.
        return "Mode: standalone" in four_letter_word(host, port, "srvr")
