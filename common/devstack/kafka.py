"""Real single-node Apache Kafka in KRaft mode, run from Maven Central jars with the JDK.

No Kafka distribution is installed: `kafka_pom/pom.xml` names the broker artifact, Maven copies
it and its runtime dependencies into a per-user cache once, and the broker runs as
`java -cp <libs>/* kafka.Kafka server.properties`, exactly what Kafka's own
`bin/kafka-server-start.sh` ends up executing. The same version runs in the compose files as
the official image `apache/kafka:<KAFKA_VERSION>`, so native and Docker runs see one broker.

`python -m common.devstack.kafka fetch` resolves the jars ahead of time (`make setup`).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from common.devstack.base import (
    NativeService,
    ServiceUnavailable,
    free_port,
    port_open,
)

# One constant for the version; kafka_pom/pom.xml repeats it (Maven cannot read Python), and
# `pom_kafka_version()` plus a test keep the two equal.
KAFKA_VERSION = "4.3.1"

POM_PATH = Path(__file__).with_name("kafka_pom") / "pom.xml"

# The single node is both broker and KRaft controller; any id works, it only has to be stable
# across restarts because the formatted log dir records it.
NODE_ID = 1

# A group nobody joins: describing it is how `is_ready` waits for the group coordinator.
READINESS_GROUP = "tasklab-devstack-readiness"

# Resolution downloads ~45 MB on a cold machine; a stuck network should fail, not hang a test.
MVN_TIMEOUT_S = 600.0

# Broker log: everything at INFO to a size-bounded file, so a dev stack left running for days
# cannot fill the disk; WARN and above also to stdout, which base.NativeService redirects to
# kafka.log, the file its "not ready, see ..." errors point at. Paths come from the
# kafka.logs.dir system property (as in Kafka's own config) so no path is embedded in XML.
# log4j2's own shutdown hook is off because it would race Kafka's: the broker logs its
# shutdown from a hook too, and those lines are the ones that explain a slow or failed stop.
# The full config dump (~450 lines, five times per start) is left out; server.properties in
# the same dir says the same.
BROKER_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT">
      <ThresholdFilter level="WARN"/>
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
    <RollingFile name="SERVER" fileName="${sys:kafka.logs.dir}/server.log"
                 filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="20 MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Root level="INFO">
      <AppenderRef ref="SERVER"/>
      <AppenderRef ref="STDOUT"/>
    </Root>
  </Loggers>
</Configuration>
"""

# Command-line tools (StorageTool) only need to say what went wrong, on stderr, which
# `_run_tool` captures for the error message.
TOOLS_LOG4J2_XML = """\
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDERR" target="SYSTEM_ERR">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </Console>
  </Appenders>
  <Loggers>
    <Root level="WARN">
      <AppenderRef ref="STDERR"/>
    </Root>
  </Loggers>
</Configuration>
"""


# -- the jar cache ---------------------------------------------------------------------------
def cache_root() -> Path:
    """Per-user cache shared by every checkout and run: the jars never change for a version."""
    override = os.environ.get("TASKLAB_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "tasklab"


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}"


def pom_kafka_version(pom: Path = POM_PATH) -> str:
    """The `kafka.version` property of the pom, to check it against KAFKA_VERSION."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise RuntimeError(f"{pom} has no <kafka.version> property")
    return node.text.strip()


def _pom_digest() -> str:
    """Identifies the pom's content: editing it (a new logging jar, say) invalidates the cache
    even when the Kafka version, and so the cache directory, stays the same."""
    return hashlib.sha256(POM_PATH.read_bytes()).hexdigest()


def _libs_complete(home: Path) -> bool:
    """True when a resolution of this very pom finished: the marker lists every jar it copied."""
    marker = home / "libs.complete"
    try:
        done = json.loads(marker.read_text())
        jars, digest = done["jars"], done["pom_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if digest != _pom_digest():
        return False
    return bool(jars) and all((home / "libs" / jar).is_file() for jar in jars)


def _one_line(text: str) -> str:
    """The most telling line of a tool's output, for a one-line ServiceUnavailable reason."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if "ERROR" in line or "Exception" in line]
    return (errors or lines or ["no output"])[0][:300]


def ensure_jars(mvn: str | None = None) -> Path:
    """Return the directory of broker jars, resolving them with Maven on first use.

    Safe to call from several processes at once (a test session and `make setup`, say): a
    file lock serialises them, Maven copies into a private directory that is renamed into
    place, and the completion marker is written last, so an interrupted run is redone rather
    than trusted.
    """
    if pom_kafka_version() != KAFKA_VERSION:
        # A programming error, not a missing tool: fail loudly instead of skipping tests.
        raise RuntimeError(
            f"{POM_PATH} pins Kafka {pom_kafka_version()} but kafka.py says {KAFKA_VERSION}"
        )
    home = kafka_home()
    libs = home / "libs"
    if _libs_complete(home):
        return libs
    mvn = mvn or shutil.which("mvn")
    if mvn is None:
        raise ServiceUnavailable(
            "mvn not found (needed once to fetch the Kafka jars): run `make setup`"
        )
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _libs_complete(home):
            return libs
        partial = home / f"libs.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        argv = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM_PATH),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={partial}",
            # The broker needs compile + runtime scope; test and provided jars stay out.
            "-DincludeScope=runtime",
        ]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=MVN_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(partial, ignore_errors=True)
            raise ServiceUnavailable(
                f"resolving Kafka {KAFKA_VERSION} jars took over {MVN_TIMEOUT_S:.0f}s"
            ) from None
        except OSError as exc:
            raise ServiceUnavailable(f"cannot run mvn to fetch the Kafka jars: {exc}") from None
        broker_jar = partial / f"kafka_2.13-{KAFKA_VERSION}.jar"
        if proc.returncode != 0 or not broker_jar.is_file():
            shutil.rmtree(partial, ignore_errors=True)
            raise ServiceUnavailable(
                f"mvn could not resolve Kafka {KAFKA_VERSION} jars: "
                f"{_one_line(proc.stdout + proc.stderr)}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        tmp = home / "libs.complete.tmp"
        done = {"version": KAFKA_VERSION, "pom_sha256": _pom_digest(), "jars": jars}
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(home / "libs.complete")
    return libs


def _find_java() -> str | None:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return str(Path(java_home, "bin", "java"))
    return shutil.which("java")


def _read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


def _controller_port(config: Path) -> int:
    """The controller port an earlier `command` chose, read back from its server.properties."""
    bootstrap = _read_properties(config)["controller.quorum.bootstrap.servers"]
    return int(bootstrap.rpartition(":")[2])


def _megabytes(size: str) -> int:
    """JVM size syntax ("512m", "1g", "262144k") in MiB, to keep -Xms at or below -Xmx."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", size.strip())
    if match is None:
        raise ValueError(f"not a JVM heap size: {size!r}")
    number, unit = int(match.group(1)), match.group(2).lower()
    return {"k": number // 1024, "m": number, "g": number * 1024, "": number // (1024 * 1024)}[unit]


# -- the service -----------------------------------------------------------------------------
class KafkaService(NativeService):
    name = "kafka"
    # Formatting plus JVM start, metadata replay and broker registration take ~4 s on an idle
    # 2-core machine; a loaded CI machine running several JVMs can take many times that.
    start_timeout = 90.0

    def __init__(self, heap: str = "512m", auto_create_topics: bool = False) -> None:
        self.heap = heap
        # Off by default: the platform creates its topics explicitly with their partition
        # counts, and a typo in a topic name should fail loudly instead of silently creating a
        # new topic that nothing consumes.
        self.auto_create_topics = auto_create_topics
        self.java = _find_java()
        self.libs: Path | None = None

    # -- NativeService steps -------------------------------------------------------------
    def check_available(self) -> None:
        if self.java is None:
            raise ServiceUnavailable(
                "java not found (Kafka needs JDK 17+): run `make setup` or set JAVA_HOME"
            )
        self.libs = ensure_jars()

    def command(self, workdir: Path, port: int) -> list[str]:
        assert self.libs is not None, "check_available() resolves the jars first"
        config = workdir / "server.properties"
        data = workdir / "data"
        if (data / "meta.properties").exists() and config.exists():
            # A restart in the same dir: the formatted metadata log records the controller's
            # endpoint in its voter set, so the controller must come back on the same port,
            # and formatting again would refuse (or, forced, wipe the messages).
            controller_port = _controller_port(config)
            formatted = True
        else:
            controller_port = free_port(self.host)
            while controller_port == port:
                controller_port = free_port(self.host)
            formatted = False
        config.write_text(self.config_text(workdir, port, controller_port))
        (workdir / "log4j2.xml").write_text(BROKER_LOG4J2_XML)
        (workdir / "tools-log4j2.xml").write_text(TOOLS_LOG4J2_XML)
        if not formatted:
            cluster_id = self._run_tool(workdir, "random-uuid").strip().splitlines()[-1]
            # --standalone makes this node the single voter of a dynamic (KIP-853) quorum,
            # which is why the config names controller.quorum.bootstrap.servers and not
            # controller.quorum.voters: the storage tool rejects the latter with --standalone.
            self._run_tool(workdir, "format", "--standalone", "-t", cluster_id, "-c", str(config))
        return [
            self.java,
            *self.jvm_options(workdir),
            "-cp",
            str(self.libs / "*"),
            "kafka.Kafka",
            str(config),
        ]

    def env_for(self, host: str, port: int) -> dict[str, str]:
        return {"TASKLAB_KAFKA_BOOTSTRAP": f"{host}:{port}"}

    def extra_for(self, workdir: Path, port: int) -> dict[str, object]:
        meta = workdir / "data" / "meta.properties"
        return {
            "kafka_version": KAFKA_VERSION,
            "controller_port": _controller_port(workdir / "server.properties"),
            "cluster_id": _read_properties(meta).get("cluster.id", "") if meta.exists() else "",
            "server_log": str(workdir / "server.log"),
        }

    def is_ready(self, host: str, port: int) -> bool:
        # The listener accepts connections before the broker has registered with the
        # controller and been unfenced; until then metadata lists no brokers and creating a
        # topic fails. Asking for metadata is the check a client actually depends on.
        if not port_open(host, port):
            return False
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(
            {
                "bootstrap.servers": f"{host}:{port}",
                "socket.timeout.ms": 2000,
                # Errors only: a probe client's info lines ("Purging 1 unserved events" on
                # destroy) would clutter the stderr of every `dev up` and test run.
                "log_level": 3,
            }
        )
        try:
            if NODE_ID not in admin.list_topics(timeout=2.0).brokers:
                return False
            # Describing any group makes the broker create __consumer_offsets and load its
            # group coordinator, and answers only once both are done. Done here, it costs
            # ~0.3 s once; left to the first consumer, librdkafka meets NOT_COORDINATOR and
            # backs off ~3 s before joining again.
            futures = admin.describe_consumer_groups([READINESS_GROUP], request_timeout=2.0)
        except KafkaException:
            return False
        # .exception() rather than .result(): re-raising here would tie this frame, the
        # future and its exception into a cycle that keeps the client (and its threads,
        # reconnecting to a stopped broker) alive until the garbage collector runs.
        return futures[READINESS_GROUP].exception(timeout=5.0) is None

    # -- configuration -------------------------------------------------------------------
    def config_text(self, workdir: Path, port: int, controller_port: int) -> str:
        broker = f"PLAINTEXT://{self.host}:{port}"
        controller = f"CONTROLLER://{self.host}:{controller_port}"
        lines = [
            # One JVM is the whole cluster: broker and KRaft controller in one process.
            "process.roles=broker,controller",
            f"node.id={NODE_ID}",
            f"controller.quorum.bootstrap.servers={self.host}:{controller_port}",
            f"listeners={broker},{controller}",
            # Loopback only and advertised as such: clients connect to exactly this address.
            # The controller listener is advertised too, as a dynamic quorum requires.
            f"advertised.listeners={broker},{controller}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={workdir / 'data'}",
            # Default partition count for topics created without one (auto-created, or tools).
            "num.partitions=3",
            f"auto.create.topics.enable={'true' if self.auto_create_topics else 'false'}",
            # There is one broker, so any internal topic asking for 3 replicas (the default)
            # could never be created and consumer groups / idempotent producers would hang.
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "default.replication.factor=1",
            "min.insync.replicas=1",
            # __consumer_offsets is created on the first group join; 50 partitions (the
            # default) make that first join take seconds on a small machine, for no benefit
            # with a handful of groups.
            "offsets.topic.num.partitions=5",
            "transaction.state.log.num.partitions=5",
            # Consumers join a group at once instead of waiting 3 s for more members: tests
            # and demos would otherwise pay that delay on every group start.
            "group.initial.rebalance.delay.ms=0",
            # After a kill, the restarted broker is refused (DUPLICATE_BROKER_REGISTRATION)
            # until the controller expires the dead incarnation's session: 9 s by default,
            # 4 s here. Not lower: broker and controller share one JVM on a 2-core machine,
            # and a long pause must not get the live broker fenced.
            "broker.session.timeout.ms=4000",
            "broker.heartbeat.interval.ms=1000",
        ]
        return "\n".join(lines) + "\n"

    def jvm_options(self, workdir: Path) -> list[str]:
        xms = min(256, _megabytes(self.heap))
        return [
            # Bounded heap: the machine has 2 cores and a few GB shared with Redis, ZooKeeper
            # and the tasklab processes; Kafka keeps data in the page cache, not the heap.
            f"-Xmx{self.heap}",
            f"-Xms{xms}m",
            # Kafka's own JVM settings (kafka-run-class.sh): G1 with short pauses.
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            # No /tmp/hsperfdata_<user> file, and native libraries (zstd, snappy) unpack into
            # the service dir: everything the broker writes stays in its workdir.
            "-XX:-UsePerfData",
            f"-Djava.io.tmpdir={workdir}",
            f"-Dkafka.logs.dir={workdir}",
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.xml'}",
        ]

    def _run_tool(self, workdir: Path, *args: str) -> str:
        """Run kafka.tools.StorageTool (what bin/kafka-storage.sh runs) and return stdout."""
        assert self.java is not None and self.libs is not None
        argv = [
            self.java,
            # A short-lived tool: a small heap and the C1 compiler only start it fastest.
            "-Xmx128m",
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-XX:-UsePerfData",
            f"-Djava.io.tmpdir={workdir}",
            f"-Dlog4j2.configurationFile={workdir / 'tools-log4j2.xml'}",
            "-cp",
            str(self.libs / "*"),
            "kafka.tools.StorageTool",
            *args,
        ]
        proc = subprocess.run(
            argv, cwd=workdir, capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise ServiceUnavailable(
                f"kafka-storage {args[0]} failed: {_one_line(proc.stderr + proc.stdout)}"
            )
        return proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.devstack.kafka")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="resolve the Kafka broker jars into the cache and print it")
    sub.add_parser("version", help="print the Kafka version the dev stack runs")
    args = parser.parse_args(argv)
    if args.cmd == "version":
        print(KAFKA_VERSION)
        return 0
    try:
        print(ensure_jars())
    except ServiceUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
