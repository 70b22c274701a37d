"""The systems under test, behind one small interface the harness drives.

`TasklabSystem(stage)` runs the stage's own roles (`tasklab run agent --stage N`, schedulers,
...) as real processes, exactly as a user would, and reads each task's timeline from its
history in Redis. `FrontDoorSystem` is the stage 4 path: the same platform (stage 3's roles
under stage 4's topology) with its TaskService providers and REST API, every task submitted
with `POST /api/v1/tasks`. `CelerySystem(parity)` runs `celery worker` with prefork and reads
the timestamps `bench.celery_app` notes. All use the one Redis the harness started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

REPO = Path(__file__).resolve().parents[1]

# The same workloads for every system; tasklab's side as task submissions.
HANDLER_NOOP = "common.examples.handlers:noop"
TASKLAB_WORKLOADS: dict[str, dict[str, str]] = {
    "noop": {"taskType": "PYTHON_SCRIPT", "payload": "pass"},
    "shell": {"taskType": "SHELL", "payload": "true"},
    "sleep10ms": {"taskType": "PYTHON_SCRIPT", "payload": "import time\ntime.sleep(0.01)"},
    # A registered function that does nothing, against Celery's no-op task (also a registered
    # function): the like-for-like comparison for a Celery user.
    "handler-noop": {"taskType": "HANDLER", "payload": json.dumps({"handler": HANDLER_NOOP})},
}
WORKLOADS = list(TASKLAB_WORKLOADS)


@dataclass
class Record:
    start: float | None  # when a worker began the task (before its body ran)
    end: float | None  # when its outcome was stored, visible to a client
    ok: bool  # finished successfully
    runs: int  # how many times it was started: more than 1 is a duplicate execution


class System(ABC):
    name: str
    family: str  # "tasklab" or "celery"

    def unavailable(self) -> str | None:
        """Why this system cannot run here, or None."""
        return None

    def uses(self, service: str) -> bool:
        """Whether this system's tasks pass through a dev-stack service besides Redis (a
        broker, a coordinator), whose CPU the harness then charges to it."""
        return False

    def prepare(self, log_dir: Path) -> None:  # noqa: B027 - optional hook
        """Start what must run before anything is submitted (a front door), if anything."""

    @abstractmethod
    def start(self, log_dir: Path) -> None:
        """Start the worker side (agents, schedulers, workers) in the background."""

    @abstractmethod
    def pids(self) -> list[int]:
        """Root PIDs of the worker side (their children are measured too)."""

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def submit(self, workload: str) -> str:
        """Enqueue one task through the system's ordinary client API; return its id."""

    def submit_many(self, workload: str, n: int) -> list[str]:
        """Enqueue n tasks as fast as the client can; their ids in submission order."""
        return [self.submit(workload) for _ in range(n)]

    @abstractmethod
    def wait_done(self, ids: list[str], timeout: float) -> int:
        """Block until every id has finished or `timeout` passes.

        Returns how many Redis commands the waiting itself issued, so that the harness can
        subtract them from the commands it charges to the system.
        """

    @abstractmethod
    def collect(self, ids: list[str]) -> dict[str, Record]: ...

    def close(self) -> None:  # noqa: B027 - optional hook, most systems hold nothing
        """Release client-side resources after a trial."""


# -- tasklab ---------------------------------------------------------------------------------
def _knows_handlers(source: Path) -> bool:
    settings = source / "common" / "config" / "settings.py"
    return settings.exists() and "agent_handlers" in settings.read_text()


class TasklabSystem(System):
    family = "tasklab"

    def __init__(
        self,
        stage: int,
        ctx,
        agents: int,
        capacity: int,
        log_level: str,
        source: Path | None = None,
        label: str = "",
    ) -> None:
        self.stage = stage
        self.name = f"tasklab-stage{stage}{label}"
        # Another checkout of tasklab (an older commit, for before/after in the same run):
        # its roles import their code from there. The client side is the current one; the
        # queue message and the task hash are a stable contract between the two.
        self.source = source
        self.ctx = ctx
        self.agents = agents
        self.capacity = capacity
        self.log_level = log_level
        self.procs: list = []
        self._client = None
        self._chroot = ""

    def unavailable(self) -> str | None:
        from common.stages import load_stage

        try:
            spec = load_stage(self.stage)
        except LookupError as exc:
            return str(exc)
        if not spec.topology:
            return f"stage {self.stage} declares no process topology in its StageSpec"
        return self.ctx.ensure_services(self.stage)

    @property
    def client(self):
        if self._client is None:
            from common.adapters.redis_store import RedisTaskStore
            from common.client import TaskClient

            self._client = TaskClient(RedisTaskStore(self.ctx.redis))
        return self._client

    def _env(self) -> dict[str, str]:
        from common.stages import load_stage

        spec = load_stage(self.stage)
        env = {
            **self.ctx.service_env(self.stage),
            # Production timers (config/local.toml), not the test suite's fast ones.
            "TASKLAB_ENV": "local",
            "TASKLAB_AGENT_CAPACITY": str(self.capacity),
            "TASKLAB_LOG_LEVEL": self.log_level,
            "TASKLAB_LOG_FORMAT": "json",
        }
        if self.source is None or _knows_handlers(self.source):
            # A baseline checkout older than registered handlers does not know the setting (its
            # Settings forbid extra fields); one that knows it runs the handler row as it did.
            env["TASKLAB_AGENT_HANDLERS"] = json.dumps([HANDLER_NOOP])
        if self.source is not None:
            # PYTHONSAFEPATH: `python -m` would otherwise put the working directory (this
            # checkout) ahead of PYTHONPATH, and the roles would run today's code.
            env["PYTHONPATH"] = str(self.source)
            env["PYTHONSAFEPATH"] = "1"
            # Its own config files too: today's may name settings it does not know.
            env["TASKLAB_CONFIG_DIR"] = str(self.source / "config")
        if "zookeeper" in spec.services:
            # A fresh chroot per trial: no registration or leadership left from the last one.
            env["TASKLAB_ZK_CHROOT"] = self._chroot
        return env

    def _roles(self, wanted=lambda role: True) -> list[tuple[str, str]]:
        from common.stages import load_stage

        spec = load_stage(self.stage)
        return [(r, n) for r, n in spec.processes(scale={"agent": self.agents}) if wanted(r)]

    def _start_roles(self, roles: list[tuple[str, str]], log_dir: Path) -> None:
        from common.devstack.roles import RoleProcess

        env = self._env()
        for role, name in roles:
            ident = f"bench-{name}"
            role_env = {**env, "TASKLAB_AGENT_ID": ident, **self._role_env(role)}
            proc = RoleProcess(role, self.stage, role_env, log_dir, ident)
            self.procs.append(proc.start())

    def _role_env(self, role: str) -> dict[str, str]:
        """What one role process needs besides the stage's environment."""
        return {}

    def start(self, log_dir: Path) -> None:
        self._chroot = f"/bench-{uuid.uuid4().hex[:8]}"
        self.procs = []
        self._start_roles(self._roles(), log_dir)

    def uses(self, service: str) -> bool:
        from common.devstack import services_for_stage

        return service in services_for_stage(self.stage)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.alive()]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop(timeout=20)
        self.procs = []

    def submit(self, workload: str) -> str:
        task, _ = self.client.submit({**TASKLAB_WORKLOADS[workload], "taskName": "bench"})
        return task.task_id

    def wait_done(self, ids: list[str], timeout: float) -> int:
        # Tasks finish roughly in submission order, so checking a window of the oldest
        # unfinished ones finds progress with few commands.
        redis: Redis = self.ctx.redis
        outstanding = list(ids)
        issued = 0
        deadline = time.monotonic() + timeout
        while outstanding and time.monotonic() < deadline:
            if self.procs and not self.pids():
                break  # every role died (see its log): what is left is lost, not late
            window = outstanding[:256]
            pipe = redis.pipeline(transaction=False)
            for tid in window:
                pipe.hget(f"task:{tid}", "status")
            statuses = pipe.execute()
            issued += len(window)
            done = {
                tid
                for tid, st in zip(window, statuses, strict=True)
                if st in (b"SUCCESS", b"FAILED", b"CANCELLED")
            }
            outstanding = [t for t in outstanding if t not in done]
            if outstanding and len(done) < len(window) // 2:
                time.sleep(0.05)
        return issued

    def collect(self, ids: list[str]) -> dict[str, Record]:
        pipe = self.ctx.redis.pipeline(transaction=False)
        for tid in ids:
            pipe.lrange(f"task:{tid}:history", 0, -1)
        out: dict[str, Record] = {}
        for tid, entries in zip(ids, pipe.execute(), strict=True):
            start = end = None
            ok = False
            runs = 0
            for raw in entries:
                e = json.loads(raw)
                if e.get("state") == "RUNNING":
                    runs += 1
                    start = start if start is not None else float(e["at"])
                elif e.get("state") in ("SUCCESS", "FAILED", "CANCELLED"):
                    end = float(e["at"])
                    ok = e["state"] == "SUCCESS"
            out[tid] = Record(start, end, ok, runs)
        return out


# -- the stage 4 path: submit through the REST API -------------------------------------------
# The API's per-caller rate limit (50/s by default) would measure its refusals, not the path:
# raised out of reach, as bench/front_door.py does; every request still pays its check.
API_ENV = {
    "TASKLAB_API__RATE_LIMITING__REQUESTS_PER_SECOND": "1000000",
    "TASKLAB_API__RATE_LIMITING__BURST": "10000000",
}
FRONT_DOOR_ROLES = ("rpc", "api")


class FrontDoorSystem(TasklabSystem):
    """Stage 4 as a user of the platform sees it: every task submitted with `POST
    /api/v1/tasks` to the REST API, which calls a TaskService provider over gRPC (found in
    ZooKeeper), which submits it to the stage 3 platform underneath (schedulers, agents,
    manager, the same two agents x capacity 1).

    The front door (providers and API) starts before anything is submitted, the platform after
    (the drain phase's backlog goes in through the API too); the worker side measured is all
    of it. A burst is submitted from `threads` client threads, as many callers would: one
    thread waiting out each HTTP round trip in turn would measure the client, not the path.
    """

    def __init__(self, ctx, agents: int, capacity: int, log_level: str, threads: int = 8, **kw):
        super().__init__(4, ctx, agents, capacity, log_level, **kw)
        self.threads = threads
        self.api_url = ""
        self._http = None

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason:
            return reason
        from common.stages import load_stage

        if "api" not in load_stage(4).roles:
            return "stage 4 has no `api` role"
        try:
            import httpx  # noqa: F401
        except ImportError:
            return "httpx is not installed: pip install -e '.[stage4]'"
        return None

    def _role_env(self, role: str) -> dict[str, str]:
        from common.devstack.base import free_port

        if role == "api":
            self.api_url = f"http://127.0.0.1:{free_port()}"
            return {**API_ENV, "TASKLAB_API_ADDRESS": self.api_url.removeprefix("http://")}
        return {}

    def prepare(self, log_dir: Path) -> None:
        import httpx

        self._chroot = f"/bench-{uuid.uuid4().hex[:8]}"
        self.procs = []
        self._start_roles(self._roles(lambda role: role in FRONT_DOOR_ROLES), log_dir)
        self._http = httpx.Client(
            base_url=self.api_url,
            timeout=30.0,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )
        # Ready: the API answers and a provider takes a submit (the API finds the providers
        # in ZooKeeper a moment after they register).
        deadline = time.monotonic() + 90
        while True:
            try:
                if self._http.get("/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not all(p.alive() for p in self.procs):
                raise RuntimeError(f"the stage 4 front door did not become ready ({log_dir})")
            time.sleep(0.2)

    def start(self, log_dir: Path) -> None:
        if self._http is None:
            self.prepare(log_dir)
        self._start_roles(self._roles(lambda role: role not in FRONT_DOOR_ROLES), log_dir)

    def stop(self) -> None:
        super().stop()
        self.close()

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def submit(self, workload: str) -> str:
        assert self._http is not None, "prepare() starts the front door"
        body = {**TASKLAB_WORKLOADS[workload], "taskName": "bench"}
        answer = self._http.post("/api/v1/tasks", json=body)
        if answer.status_code != 201:
            raise RuntimeError(f"submit: HTTP {answer.status_code}: {answer.text[:200]}")
        return answer.json()["taskId"]

    def submit_many(self, workload: str, n: int) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            return list(pool.map(lambda _: self.submit(workload), range(n)))


# -- Celery ----------------------------------------------------------------------------------
class CelerySystem(System):
    family = "celery"

    def __init__(self, parity: bool, ctx, concurrency: int, log_level: str) -> None:
        self.parity = parity
        self.name = "celery-parity" if parity else "celery-stock"
        self.ctx = ctx
        self.concurrency = concurrency
        self.log_level = log_level
        self.proc: subprocess.Popen | None = None
        self.record_dir: Path | None = None
        self._app = None
        self._log = None

    def unavailable(self) -> str | None:
        try:
            import celery  # noqa: F401
        except ImportError:
            return "celery is not installed: pip install -e '.[bench]'"
        return None

    def _client_app(self):
        # A fresh client app per trial: Celery's Redis result backend subscribes to every
        # submitted task's result channel, and closing the app drops those subscriptions.
        if self._app is None:
            from celery import Celery

            self._app = Celery(
                "bench-client", broker=self.ctx.redis_url, backend=self.ctx.redis_url
            )
            self._app.conf.update(task_serializer="json", accept_content=["json"])
        return self._app

    def start(self, log_dir: Path) -> None:
        self.record_dir = log_dir / f"{self.name}-records"
        self.record_dir.mkdir(parents=True, exist_ok=True)
        for old in self.record_dir.glob("*.rec"):
            old.unlink()
        env = {
            **os.environ,
            "BENCH_REDIS_URL": self.ctx.redis_url,
            "BENCH_PARITY": "1" if self.parity else "0",
            "BENCH_RECORD_DIR": str(self.record_dir),
        }
        self._log = open(log_dir / f"{self.name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.celery_app",
                "worker",
                "--pool",
                "prefork",
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                self.log_level,
                "--hostname",
                f"{self.name}@%h",
            ],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.poll() is None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: finish, then exit
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        # Pool children that outlived the main process would be orphans: kill what is left of
        # the group we started (our own PID's group only).
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None
        if self._log:
            self._log.close()

    def close(self) -> None:
        if self._app is not None:
            self._app.close()
            self._app = None

    def submit(self, workload: str) -> str:
        return self._client_app().send_task(f"bench.{_CELERY_TASK[workload]}").id

    def _records(self) -> dict[str, list[tuple[float, float]]]:
        found: dict[str, list[tuple[float, float]]] = {}
        if self.record_dir is None:
            return found
        for path in self.record_dir.glob("*.rec"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3:
                    found.setdefault(parts[0], []).append((float(parts[1]), float(parts[2])))
        return found

    def wait_done(self, ids: list[str], timeout: float) -> int:
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if wanted <= self._records().keys() or not self.pids():
                break
            time.sleep(0.05)
        return 0  # the records are files: the waiting costs Redis nothing

    def collect(self, ids: list[str]) -> dict[str, Record]:
        records = self._records()
        pipe = self.ctx.redis.pipeline(transaction=False)
        for tid in ids:
            pipe.get(f"celery-task-meta-{tid}")
        out: dict[str, Record] = {}
        for tid, meta in zip(ids, pipe.execute(), strict=True):
            ok = bool(meta) and json.loads(meta).get("status") == "SUCCESS"
            runs = records.get(tid, [])
            start = min((r[0] for r in runs), default=None)
            end = max((r[1] for r in runs), default=None)
            out[tid] = Record(start, end, ok and bool(runs), len(runs))
        return out


_CELERY_TASK = {"noop": "noop", "shell": "shell", "sleep10ms": "sleep10", "handler-noop": "noop"}
