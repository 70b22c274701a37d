"""pytest fixtures for real services, resolved the same way for every service.

For each service, in order: an address given in the environment (TASKLAB_TEST_REDIS_URL,
TASKLAB_TEST_ZK_HOSTS, TASKLAB_TEST_KAFKA_BOOTSTRAP,
TASKLAB_TEST_ARCHIVE_DSN), else the native binary started on a free
loopback port with a throw-away data dir, else testcontainers when a Docker engine answers.
If none works: the test fails under CI (CI=true) and is skipped locally, with the reason.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.devstack.base import RunningService, ServiceUnavailable
from common.devstack.stack import make_service


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"service unavailable under CI: {reason}", pytrace=False)
    pytest.skip(reason)


class ServiceHandle:
    """A started (or externally given) service; `running` is None when we do not own it."""

    def __init__(self, env: dict[str, str], running: RunningService | None, service=None):
        self.env = env
        self.running = running
        self.service = service

    def restart(self) -> None:
        if self.running is None or not hasattr(self.service, "restart"):
            pytest.skip("restart needs a service this test run started itself")
        self.running = self.service.restart(self.running)


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env().ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no engine"
        return False


def _containers(name: str) -> Iterator[dict[str, str]]:
    """The third resolution step: the same versions as the native stack, in testcontainers.

    Used only where neither an address nor a native binary is available and a Docker engine
    answers (e.g. a laptop without the Debian packages); `make setup` makes it unnecessary here.
    """
    from testcontainers.core.container import DockerContainer  # type: ignore[import-not-found]
    from testcontainers.core.waiting_utils import wait_for_logs  # type: ignore[import-not-found]

    from common.devstack.victorialogs import VICTORIALOGS_VERSION

    if name == "kafka":
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]

        from common.devstack.kafka import KAFKA_VERSION

        with KafkaContainer(f"apache/kafka:{KAFKA_VERSION}").with_kraft() as kafka:
            yield {"TASKLAB_KAFKA_BOOTSTRAP": kafka.get_bootstrap_server()}
        return
    if name == "postgresql":
        from common.devstack.postgresql import MAJOR

        with (
            DockerContainer(f"postgres:{MAJOR}")
            .with_env("POSTGRES_USER", "tasklab")
            .with_env("POSTGRES_DB", "tasklab")
            .with_env("POSTGRES_HOST_AUTH_METHOD", "trust")
            .with_exposed_ports(5432) as container
        ):
            # The image's entrypoint restarts the server once after its first-run setup.
            wait_for_logs(container, "ready to accept connections", timeout=60)
            host, mapped = container.get_container_host_ip(), container.get_exposed_port(5432)
            yield {"TASKLAB_ARCHIVE_DSN": f"postgresql://tasklab@{host}:{mapped}/tasklab"}
        return
    image, port, ready, env_var, fmt = {
        "redis": (
            "redis:7.0.15",
            6379,
            "Ready to accept connections",
            "TASKLAB_REDIS_URL",
            "redis://{}:{}/0",
        ),
        "zookeeper": ("zookeeper:3.8.0", 2181, "binding to port", "TASKLAB_ZK_HOSTS", "{}:{}"),
        # The version `make setup` builds (common/devstack/victorialogs.py).
        "victorialogs": (
            f"victoriametrics/victoria-logs:{VICTORIALOGS_VERSION}",
            9428,
            "started server at",
            "TASKLAB_LOGS_URL",
            "http://{}:{}",
        ),
    }[name]
    with DockerContainer(image).with_exposed_ports(port) as container:
        wait_for_logs(container, ready, timeout=60)
        host, mapped = container.get_container_host_ip(), container.get_exposed_port(port)
        yield {env_var: fmt.format(host, mapped)}


def _start(name: str, env_var: str, workdir: Path, **kwargs) -> Iterator[ServiceHandle]:
    given = os.environ.get(env_var)
    if given:
        key = env_var.replace("TASKLAB_TEST_", "TASKLAB_")
        yield ServiceHandle({key: given}, None)
        return
    service = make_service(name, **kwargs)
    try:
        running = service.start(workdir)
    except ServiceUnavailable as exc:
        if _docker_answers():
            try:
                for env in _containers(name):
                    yield ServiceHandle(env, None)
                return
            except ImportError:
                exc = ServiceUnavailable(
                    f"{exc}; a Docker engine answers but testcontainers "
                    "is not installed (pip install testcontainers)"
                )
        unavailable(f"{name}: {exc}")
        return
    handle = ServiceHandle(dict(running.env), running, service)
    try:
        yield handle
    finally:
        service.stop(handle.running)


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory) -> Iterator[ServiceHandle]:
    yield from _start("redis", "TASKLAB_TEST_REDIS_URL", tmp_path_factory.mktemp("redis"))


@pytest.fixture
def redis_url(redis_service: ServiceHandle) -> str:
    """A Redis URL with an empty database for this test."""
    import redis

    url = redis_service.env["TASKLAB_REDIS_URL"]
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def redis_client(redis_url: str):
    import redis

    client = redis.Redis.from_url(url=redis_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def zookeeper_service(tmp_path_factory) -> Iterator[ServiceHandle]:
    yield from _start("zookeeper", "TASKLAB_TEST_ZK_HOSTS", tmp_path_factory.mktemp("zk"))


@pytest.fixture
def zk_chroot() -> str:
    """A fresh chroot per test, so tests share one ZooKeeper without seeing each other."""
    return f"/tasklab-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def zk(zookeeper_service: ServiceHandle, zk_chroot: str):
    """The test's own kazoo client, inside the test's chroot (created with /live-agents)."""
    from kazoo.client import KazooClient

    from common.coordination.paths import LIVE_AGENTS

    hosts = zookeeper_service.env["TASKLAB_ZK_HOSTS"]
    bootstrap = KazooClient(hosts=hosts)
    bootstrap.start(timeout=10)
    bootstrap.ensure_path(zk_chroot + LIVE_AGENTS)
    bootstrap.stop()
    bootstrap.close()
    client = KazooClient(hosts=hosts + zk_chroot)
    client.start(timeout=10)
    yield client
    client.stop()
    client.close()


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory) -> Iterator[ServiceHandle]:
    yield from _start("kafka", "TASKLAB_TEST_KAFKA_BOOTSTRAP", tmp_path_factory.mktemp("kafka"))


@pytest.fixture(scope="session")
def victorialogs_service(tmp_path_factory) -> Iterator[ServiceHandle]:
    """A real VictoriaLogs (stage 5's log store); its env is TASKLAB_LOGS_URL."""
    yield from _start("victorialogs", "TASKLAB_TEST_LOGS_URL", tmp_path_factory.mktemp("vlogs"))


@pytest.fixture(scope="session")
def postgresql_service() -> Iterator[ServiceHandle]:
    """PostgreSQL for the archive (TASKLAB_ARCHIVE_DSN), one server for the session.

    Its dir is not under pytest's tmp dir: that one is private to its owner (0700), and when
    the tests run as root PostgreSQL runs as the `postgres` user, who must be able to reach
    its data dir (common/devstack/postgresql.py).
    """
    workdir = Path(tempfile.mkdtemp(prefix="tasklab-postgresql-"))
    workdir.chmod(0o755)
    try:
        yield from _start("postgresql", "TASKLAB_TEST_ARCHIVE_DSN", workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def new_database(postgresql_service: ServiceHandle) -> str:
    """A DSN of a new, empty database on the session's PostgreSQL."""
    import psycopg

    base = postgresql_service.env["TASKLAB_ARCHIVE_DSN"]
    name = f"t{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture
def archive_dsn(postgresql_service: ServiceHandle) -> str:
    """A DSN of an empty database of its own for this test (created on the session's server)."""
    import psycopg

    dsn = new_database(postgresql_service)
    yield dsn
    with psycopg.connect(postgresql_service.env["TASKLAB_ARCHIVE_DSN"], autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dsn.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture
def kafka_namespace() -> str:
    """A fresh topic and consumer-group prefix per test (TASKLAB_KAFKA_NAMESPACE), so tests
    share one broker without reading each other's messages or committed offsets."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
def role_log_dir(tmp_path: Path) -> Path:
    d = tmp_path / "roles"
    d.mkdir()
    return d


@pytest.fixture
def start_role(role_log_dir: Path):
    """Start `tasklab run ROLE --stage N` processes; all are stopped when the test ends.

    On failure their logs are printed, so a red test shows what the agents said.
    """
    started: list = []

    def start(role: str, stage: int, env: dict[str, str], name: str | None = None):
        from common.testing.processes import RoleProcess

        proc = RoleProcess(role, stage, env, role_log_dir, name=name or f"{role}-{len(started)}")
        started.append(proc.start())
        return proc

    yield start
    from common.testing.processes import stop_all

    stop_all(started)
    for proc in started:
        text = proc.log_text()
        if text:
            print(f"\n----- {proc.name} (pid {proc.pid}) -----\n{text[-4000:]}")
