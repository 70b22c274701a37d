"""The `platform` fixture: one whole stage running on real services, for the contract suite.

Parametrised over every installed stage, so the same lifecycle tests run against stage 1, 2
and 3 alike: only the infrastructure changes, never the task API. What a stage runs (its
backing services and its processes) comes from its own StageSpec, so a new stage joins the
suite by being installed.

`platform` is a test's own (the fault tests kill and stop its processes); `shared_platform` is
started once per module and stage (a stage 3 or 4 platform takes seconds to start and stop),
for tests that only submit tasks and read them back, each with ids of its own.
"""

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.base import free_port
from common.stages import installed_stages, load_stage
from common.testing.processes import RoleProcess, stop_all
from common.testing.pytest_plugin import new_database

STAGES = [s for s in installed_stages() if load_stage(s).topology]
# A shared platform's database: other suites flush database 0 per test, and this platform
# outlives a test (stage 4's module platforms use database 4).
SHARED_DB = 3


def _shared(request) -> bool:
    return request.scope == "module"


def _redis(request) -> dict[str, str]:
    if not _shared(request):
        return {"TASKLAB_REDIS_URL": request.getfixturevalue("redis_url")}
    base = request.getfixturevalue("redis_service").env["TASKLAB_REDIS_URL"]
    url = base.rsplit("/", 1)[0] + f"/{SHARED_DB}"
    redis_client(url).flushdb()  # emptied once, when the platform starts
    return {"TASKLAB_REDIS_URL": url}


def _zookeeper(request) -> dict[str, str]:
    # Its own chroot per platform: platforms share one ZooKeeper without seeing each other.
    env = dict(request.getfixturevalue("zookeeper_service").env)
    env["TASKLAB_ZK_CHROOT"] = (
        f"/tasklab-contract-{uuid.uuid4().hex[:8]}"
        if _shared(request)
        else request.getfixturevalue("zk_chroot")
    )
    return env


def _kafka(request) -> dict[str, str]:
    # Its own topic prefix per platform, for the same reason.
    env = dict(request.getfixturevalue("kafka_service").env)
    env["TASKLAB_KAFKA_NAMESPACE"] = (
        f"c{uuid.uuid4().hex[:8]}"
        if _shared(request)
        else request.getfixturevalue("kafka_namespace")
    )
    return env


def _postgresql(request) -> dict[str, str]:
    if not _shared(request):
        return {"TASKLAB_ARCHIVE_DSN": request.getfixturevalue("archive_dsn")}
    service = request.getfixturevalue("postgresql_service")
    return {"TASKLAB_ARCHIVE_DSN": new_database(service)}


# Backing service -> the TASKLAB_* settings that point a role at the test's instance of it.
# Keyed by service, not by stage: a new stage built on these services needs nothing here.
SERVICE_ENV: dict[str, Callable[[pytest.FixtureRequest], dict[str, str]]] = {
    "redis": _redis,
    "zookeeper": _zookeeper,
    "kafka": _kafka,
    # Stage 5's watchers: they read the roles, no role reads them, so a contract platform
    # (which checks the task lifecycle, not the alerts) runs without them.
    "alertmanager": lambda request: {},
    "prometheus": lambda request: {},
    # The log store: roles ship to it only when TASKLAB_LOGS_URL is set, and their stderr
    # stays the log either way, so a contract platform runs without it too.
    "victorialogs": lambda request: {},
    # Stage 5's archive: its archiver runs in the topology, on a database of its own.
    "postgresql": _postgresql,
}


@dataclass
class Platform:
    stage: int
    env: dict[str, str]
    client: TaskClient
    processes: dict[str, RoleProcess] = field(default_factory=dict)

    def agent_running(self, task_id: str) -> RoleProcess:
        """The agent process the task is placed on now."""
        return self.processes[self.client.get(task_id).agent_id]

    def log_marks(self) -> dict[str, int]:
        """How far each role's log goes now: where a test's own part of it starts."""
        return {
            name: proc.log_path.stat().st_size if proc.log_path.exists() else 0
            for name, proc in self.processes.items()
        }

    def print_logs_since(self, marks: dict[str, int]) -> None:
        """What each role logged since `marks` (pytest shows it with a failing test)."""
        for name, proc in self.processes.items():
            if not proc.log_path.exists():
                continue
            with open(proc.log_path, "rb") as log:
                log.seek(marks.get(name, 0))
                text = log.read().decode(errors="replace")
            if text:
                print(f"\n----- {name} (pid {proc.pid}) -----\n{text[-4000:]}")


Start = Callable[..., RoleProcess]


def _start_platform(request, start: Start) -> Platform:
    spec = load_stage(request.param)
    env: dict[str, str] = {}
    for service in spec.services:
        if service not in SERVICE_ENV:
            pytest.fail(f"stage {spec.number} needs {service!r}, which the contract suite lacks")
        env.update(SERVICE_ENV[service](request))
    if "api" in spec.roles:
        # A role serving on a fixed address (the REST API) gets a free port per platform, so
        # parallel runs never fight over the configured default.
        env["TASKLAB_API_ADDRESS"] = f"127.0.0.1:{free_port()}"
    processes = {
        name: start(role, spec.number, {**env, "TASKLAB_AGENT_ID": name}, name=name)
        for role, name in spec.processes()
    }
    client = TaskClient(RedisTaskStore(redis_client(env["TASKLAB_REDIS_URL"])))
    return Platform(spec.number, env, client, processes)


@pytest.fixture(params=STAGES, ids=[f"stage{s}" for s in STAGES])
def platform(request, start_role) -> Platform:
    """A stage of the test's own: a fault test may kill, stop or freeze any of its processes."""
    return _start_platform(request, start_role)


@pytest.fixture(scope="module", params=STAGES, ids=[f"stage{s}" for s in STAGES])
def shared_platform(request, tmp_path_factory) -> Iterator[Platform]:
    """A stage started once for the module's tests of that stage, on a database, chroot and
    topic namespace of its own. Only for tests that leave every process running and find
    their tasks by their own ids, never by "the newest task" or a counter's absolute value."""
    log_dir: Path = tmp_path_factory.mktemp(f"stage{request.param}-roles")
    started: list[RoleProcess] = []

    def start(role: str, stage: int, env: dict[str, str], name: str) -> RoleProcess:
        proc = RoleProcess(role, stage, env, log_dir, name=name)
        started.append(proc.start())
        return proc

    try:
        yield _start_platform(request, start)
    finally:
        stop_all(started)
