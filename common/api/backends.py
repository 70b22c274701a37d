"""What the API process talks to, built on first use, and the checks `/ready` runs on them.

Nothing connects when the app is built (the OpenAPI document is produced offline, and an API
started before ZooKeeper must still answer `/health`): the TaskService proxy and its ZooKeeper
client are made by the first request that needs them, and made again by a later one if that
failed. Redis is only a connection pool until used (the readiness check and the links' rate
limiter use it); the API never reads or writes tasks there: tasks go through the providers.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kazoo.protocol.states import KazooState
from redis import Redis

from common.adapters.redis_client import redis_client
from common.adapters.redis_dead_letter import RedisDeadLetterBox
from common.api import catalog
from common.api.cluster import Cluster, read_cluster
from common.config import Settings
from common.coordination.zk import CoordinationUnavailable, close_zk, get_zk
from common.observability import get_logger
from common.ports.archive import ArchiveUnavailable, NoArchive, TaskArchive
from common.ports.bus_dead_letters import BusDeadLetters, NoBusDeadLetters
from common.ports.dead_letters import DeadLetterBox
from common.rpc.aio_proxy import AsyncTaskServiceProxy
from common.rpc.proxy import TaskServiceProxy

log = get_logger("tasklab.api")

CHECK_TIMEOUT = 2.0  # seconds each readiness check may take; they run side by side


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    detail: str
    latency_ms: float


class Backends:
    def __init__(
        self,
        settings: Settings,
        tasks: Any = None,
        dead_letters: DeadLetterBox | None = None,
        cluster: Callable[[], Cluster] | None = None,
        bus_dead_letters: BusDeadLetters | None = None,
    ) -> None:
        self.settings = settings
        self.redis: Redis = redis_client(settings.redis_url)  # a pool: no connection yet
        self._tasks = tasks
        self._dead_letters = dead_letters
        self._bus_dead_letters = bus_dead_letters
        self._cluster = cluster
        self._zk: Any = None
        self._kafka: Any = None
        self._health: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="api-ready")
        self._archive: TaskArchive | None = None
        self._async_tasks: Any = None

    # -- the TaskService -------------------------------------------------------------------
    @property
    def tasks(self) -> TaskServiceProxy:
        """The discovering, retrying TaskService stub (Problem 503 while ZooKeeper is away)."""
        if self._tasks is not None:
            return self._tasks
        with self._lock:
            if self._tasks is None:
                try:
                    self._zk = get_zk(self.settings)
                except CoordinationUnavailable as exc:
                    raise catalog.unavailable(f"ZooKeeper: {exc}", retry_after=2) from None
                self._tasks = TaskServiceProxy(self._zk).start()
            return self._tasks

    async def async_tasks(self) -> Any:
        """The TaskService for a route that awaits (the submit route): the proxy's calls on
        the event loop (common.rpc.aio_proxy), or, for a stub given to create_app that only
        blocks (a test's fake), its calls on worker threads."""
        if self._async_tasks is None:
            # Building the proxy connects to ZooKeeper, which blocks (for seconds when it is
            # away): on a worker thread, once, never on the event loop.
            tasks = await anyio.to_thread.run_sync(lambda: self.tasks)
            # Another first request may have finished meanwhile: keep its wrapper (and its
            # channels), not a second one.
            if self._async_tasks is None:
                if isinstance(tasks, TaskServiceProxy):
                    self._async_tasks = AsyncTaskServiceProxy(tasks)
                else:
                    self._async_tasks = ThreadedTaskService(tasks)
        return self._async_tasks

    async def aclose(self) -> None:
        """Close what lives on the event loop (the grpc.aio channels); the lifespan's end."""
        if isinstance(self._async_tasks, AsyncTaskServiceProxy):
            await self._async_tasks.close()

    @property
    def dead_letters(self) -> DeadLetterBox:
        if self._dead_letters is None:
            self._dead_letters = RedisDeadLetterBox(self.redis, self.settings.dead_letter_max)
        return self._dead_letters

    @property
    def bus_dead_letters(self) -> BusDeadLetters:
        """The dead-letter topic's reader; `NoBusDeadLetters` when no bus is configured (an
        empty `kafka_bootstrap`). Its Kafka client is imported and made on first use only."""
        if self._bus_dead_letters is None:
            if not self.settings.kafka_bootstrap.strip():
                self._bus_dead_letters = NoBusDeadLetters(
                    "no Kafka event bus is configured (kafka_bootstrap is empty)"
                )
            else:
                from common.api.bus_dead_letters import KafkaBusDeadLetters
                from common.messaging.clients import Bus

                self._bus_dead_letters = KafkaBusDeadLetters(Bus.from_settings(self.settings))
        return self._bus_dead_letters

    def cluster(self) -> Cluster:
        """The scheduler leader, its epoch and the live agents' nodes (common.api.cluster)."""
        if self._cluster is not None:
            return self._cluster()
        try:
            zk = self._zookeeper()
        except Exception as exc:  # noqa: BLE001 - shown on the page as the reason
            return read_cluster(None, self.redis, zk_note=getattr(exc, "detail", "") or str(exc))
        return read_cluster(zk, self.redis)

    # -- the archive (stage 5): where a task is read once Redis no longer has it ----------
    @property
    def archive(self) -> TaskArchive:
        """PostgreSQL when `archive_dsn` is set, else `NoArchive`: the driver is imported only
        when an archive is configured, so the API runs without it."""
        if self._archive is None:
            if self.settings.archive_dsn:
                from common.archive.store import PostgresArchive

                self._archive = PostgresArchive(self.settings.archive_dsn)
            else:
                self._archive = NoArchive()
        return self._archive

    def archived(self, task_id: str):
        """The task's archived view (marked `archived`), or None if never archived; a
        Problem 503 when the archive is configured and does not answer."""
        from common.api import views

        try:
            found = self.archive.get(task_id)
        except ArchiveUnavailable as exc:
            raise catalog.unavailable(f"archive: {exc}", retry_after=2) from None
        return None if found is None else views.archived_detail(found)

    def providers(self) -> list[str]:
        return self._tasks.providers() if self._tasks is not None else []

    def close(self) -> None:
        if self._tasks is not None and hasattr(self._tasks, "close"):
            self._tasks.close()
        for channel, _ in self._health.values():
            channel.close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._archive is not None and hasattr(self._archive, "close"):
            self._archive.close()
        if self._bus_dead_letters is not None:
            self._bus_dead_letters.close()
        if self._zk is not None:
            # Closed, not left to expire: ZooKeeper forgets this session (and its watches) now.
            close_zk(self.settings)

    # -- readiness -------------------------------------------------------------------------
    def check_all(self) -> dict[str, CheckResult]:
        """Redis, ZooKeeper, Kafka and the providers, checked side by side, each bounded."""
        checks: dict[str, Callable[[], str]] = {
            "redis": self._check_redis,
            "zookeeper": self._check_zookeeper,
            "kafka": self._check_kafka,
            "providers": self._check_providers,
        }
        started = {
            name: (self._pool.submit(_timed, fn), time.monotonic()) for name, fn in checks.items()
        }
        out = {}
        for name, (future, t0) in started.items():
            try:
                out[name] = future.result(
                    timeout=max(0.1, CHECK_TIMEOUT + 0.5 - (time.monotonic() - t0))
                )
            except TimeoutError:
                out[name] = CheckResult(False, "no answer in time", CHECK_TIMEOUT * 1000)
        return out

    def _check_redis(self) -> str:
        self.redis.ping()
        return "PING answered"

    def _zookeeper(self) -> Any:
        self.tasks  # noqa: B018 - builds the proxy and its ZooKeeper client if not yet
        if self._zk is None:  # a proxy given to create_app (tests): no client of our own
            self._zk = get_zk(self.settings)
        return self._zk

    def _check_zookeeper(self) -> str:
        zk = self._zookeeper()
        raw = getattr(zk, "raw", zk)
        if raw.state != KazooState.CONNECTED:
            raise ConnectionError(f"session {raw.state.lower()}")
        raw.exists_async("/").get(timeout=CHECK_TIMEOUT)
        return "session connected"

    def _check_kafka(self) -> str:
        if not self.settings.kafka_bootstrap.strip():
            return "no event bus configured"
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        if self._kafka is None:
            self._kafka = AdminClient(
                {
                    "bootstrap.servers": self.settings.kafka_bootstrap,
                    "logger": get_logger("tasklab.kafka"),
                }
            )
        try:
            metadata = self._kafka.list_topics(timeout=CHECK_TIMEOUT)
        except KafkaException as exc:
            raise ConnectionError(str(exc.args[0] if exc.args else exc)) from None
        return f"{len(metadata.brokers)} broker(s)"

    def _check_providers(self) -> str:
        self.tasks  # noqa: B018 - discovery starts with the proxy
        addresses = self.providers()
        if not addresses:
            raise ConnectionError("no TaskService provider registered in ZooKeeper")
        serving = [a for a in addresses if self._serving(a)]
        if not serving:
            raise ConnectionError(f"none of {len(addresses)} provider(s) reports SERVING")
        return f"{len(serving)} of {len(addresses)} SERVING"

    def _serving(self, address: str) -> bool:
        if address not in self._health:
            channel = grpc.insecure_channel(address)
            self._health[address] = (channel, health_pb2_grpc.HealthStub(channel))
        try:
            answer = self._health[address][1].Check(
                health_pb2.HealthCheckRequest(service=""), timeout=CHECK_TIMEOUT / 2
            )
        except grpc.RpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING


class ThreadedTaskService:
    """A blocking TaskService behind the asynchronous interface, each call on a worker thread:
    what the submit route awaits when create_app was given a stub that only blocks."""

    def __init__(self, tasks: Any) -> None:
        self._tasks = tasks

    async def submit(self, request, timeout=None, metadata=None):
        call = functools.partial(self._tasks.submit, request, timeout=timeout, metadata=metadata)
        return await anyio.to_thread.run_sync(call)

    async def get_task_info(self, task_id, timeout=None, metadata=None):
        call = functools.partial(
            self._tasks.get_task_info, task_id, timeout=timeout, metadata=metadata
        )
        return await anyio.to_thread.run_sync(call)

    async def watch(
        self, task_id, from_transition=0, from_log=0, timeout=None, metadata=None
    ) -> AsyncIterator[Any]:
        watch = self._tasks.watch
        events = iter(watch(task_id, from_transition, from_log, timeout=timeout, metadata=metadata))
        done = object()
        while (event := await anyio.to_thread.run_sync(next, events, done)) is not done:
            yield event


def _timed(check: Callable[[], str]) -> CheckResult:
    t0 = time.monotonic()
    try:
        detail = check()
        ok = True
    except Exception as exc:  # noqa: BLE001 - any failure is "down", said in the detail
        detail = getattr(exc, "detail", "") or f"{type(exc).__name__}: {exc}"
        ok = False
    return CheckResult(ok, detail, round((time.monotonic() - t0) * 1000, 1))
