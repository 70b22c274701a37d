"""TaskServiceProxy: the client-side stub that finds, balances and fails over providers.

Pattern: Proxy (stage 4; the stage 2 one is `RetryingClient` in common/coordination/zk.py).
It has the TaskService's methods, and callers use it as if it were one server; behind it:
- discovery: a ChildrenWatch on `/services/TaskService` keeps the set of providers current (a
  provider's ephemeral node vanishes when it dies; a new one appears when it starts), so no
  client is restarted or reconfigured when providers come and go;
- balancing: round robin over the providers, in address order;
- failover: a call answered UNAVAILABLE (the provider died, is stopping, or its Redis is down)
  is tried again on the next provider, until it succeeds or the call's own deadline passes.
  Any other status is the answer, not a failure of the provider, and is raised at once.

Retrying is only safe for calls that cannot apply twice, so the proxy makes them so: Submit and
Retry always carry a requestId (one is generated when the caller gave none), and the store maps
one requestId to one task, so a Submit the dead provider applied before it could answer returns
that same task on the next provider. Cancel is idempotent already (a cancelled task accepts a
cancel again); GetTaskInfo and List only read. Watch resumes on the next provider from the
sequence numbers it last delivered, so the caller sees every event once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from kazoo.recipe.watchers import ChildrenWatch

from common.observability import get_logger
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.registry import TASK_SERVICE

log = get_logger("tasklab.rpc.proxy")

DEFAULT_TIMEOUT = 10.0
# Per-call gRPC metadata, e.g. the caller's credentials the REST API passes on.
Metadata = Sequence[tuple[str, str]] | None
# A provider that answered UNAVAILABLE is passed over for this long (unless it is the only
# one): its node may linger for a session timeout after it died.
SUSPECT_FOR = 2.0
# A retry with less time than this left could only run out of it: the answer the providers
# gave so far (UNAVAILABLE) stands, rather than a deadline the retry itself would hit.
LAST_RETRY_MIN = 0.1
CLIENT_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


class NoProvider(grpc.RpcError):
    """No provider answered within the deadline (none registered, or all unavailable)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


# --8<-- [start:watch-cursor]
class WatchCursor:
    """Where a watch picks up on another provider: just past the last transition and the
    last log line it yielded, so that across providers each event is seen once, in order
    within its kind. Shared by the blocking proxy and the asyncio one (aio_proxy)."""

    def __init__(self, task_id: str, from_transition: int, from_log: int) -> None:
        self.task_id = task_id
        self.next_transition, self.next_log = from_transition, from_log

    def request(self) -> pb.WatchRequest:
        return pb.WatchRequest(
            task_id=self.task_id, from_transition=self.next_transition, from_log=self.next_log
        )

    def passed(self, event: pb.WatchEvent) -> bool:
        """Note an event about to be yielded; True if it is the final one."""
        kind = event.WhichOneof("event")
        if kind == "transition":
            self.next_transition = event.sequence + 1
        elif kind == "log":
            self.next_log = event.sequence + 1
        return kind == "final"

    def cannot_continue(self, last: grpc.RpcError | None) -> NoProvider:
        """The error when no provider could take the watch further before the deadline."""
        return NoProvider(
            grpc.StatusCode.UNAVAILABLE if last else grpc.StatusCode.DEADLINE_EXCEEDED,
            f"watch of {self.task_id} could not continue: "
            + (last.details() if last else "no provider registered"),
        )


# --8<-- [end:watch-cursor]


class TaskServiceProxy:
    def __init__(self, zk: Any, default_timeout: float = DEFAULT_TIMEOUT) -> None:
        # A RetryingClient (common.coordination.zk) or a plain KazooClient: recipes need the raw.
        self._zk = getattr(zk, "raw", zk)
        self.default_timeout = default_timeout
        self._lock = threading.Lock()
        self._providers: list[str] = []
        self._channels: dict[str, tuple[grpc.Channel, pb_grpc.TaskServiceStub]] = {}
        self._suspect: dict[str, float] = {}
        self._next = 0
        self._changed = threading.Condition(self._lock)
        self.failovers = 0  # calls retried on another provider (for tests and logs)
        self.last_provider = ""  # the provider the latest attempt went to (likewise)

    # -- discovery -------------------------------------------------------------------------
    def start(self) -> TaskServiceProxy:
        self._zk.ensure_path(TASK_SERVICE)
        ChildrenWatch(self._zk, TASK_SERVICE, self._on_children)
        return self

    def providers(self) -> list[str]:
        with self._lock:
            return list(self._providers)

    # --8<-- [start:discover]
    def _on_children(self, children: list[str]) -> None:
        # kazoo's event thread: no blocking work here (closing a channel does not block).
        with self._lock:
            current = sorted(children)
            gone = set(self._providers) - set(current)
            joined = set(current) - set(self._providers)
            self._providers = current
            closing = [self._channels.pop(a)[0] for a in gone if a in self._channels]
            for address in gone:
                self._suspect.pop(address, None)
            self._changed.notify_all()
        for channel in closing:
            channel.close()
        if joined:
            log.info("TaskService providers joined: %s", ", ".join(sorted(joined)))
        if gone:
            log.info("TaskService providers left: %s", ", ".join(sorted(gone)))

    # --8<-- [end:discover]

    def close(self) -> None:
        with self._lock:
            channels = [c for c, _ in self._channels.values()]
            self._channels.clear()
        for channel in channels:
            channel.close()

    # -- choosing a provider ---------------------------------------------------------------
    # --8<-- [start:pick]
    def _pick(self, tried: set[str], deadline: float) -> str | None:
        """The next provider in round-robin order not tried by this call (healthy ones first);
        waits for one to register, until the deadline; None when every one was tried."""
        with self._lock:
            while not self._providers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(min(remaining, 0.5))
            return self._choose_locked(tried)

    def choose(self, tried: set[str]) -> str | None:
        """As `_pick`, without waiting: None when none is registered or every one was tried
        (the asyncio proxy, common.rpc.aio_proxy, waits on its own loop instead)."""
        with self._lock:
            return self._choose_locked(tried) if self._providers else None

    def _choose_locked(self, tried: set[str]) -> str | None:
        now = time.monotonic()
        fresh = [a for a in self._providers if a not in tried]
        healthy = [a for a in fresh if self._suspect.get(a, 0) <= now]
        choices = healthy or fresh
        if not choices:
            return None
        address = choices[self._next % len(choices)]
        self._next += 1
        return address

    # --8<-- [end:pick]

    def _stub(self, address: str) -> pb_grpc.TaskServiceStub:
        with self._lock:
            if address not in self._channels:
                channel = grpc.insecure_channel(address, options=CLIENT_OPTIONS)
                self._channels[address] = (channel, pb_grpc.TaskServiceStub(channel))
            return self._channels[address][1]

    def unavailable(self, address: str, error: grpc.RpcError) -> None:
        """Mark `address` suspect after it answered UNAVAILABLE (the asyncio proxy's calls
        too: both share one view of which providers are healthy)."""
        with self._lock:
            self._suspect[address] = time.monotonic() + SUSPECT_FOR
        self.failovers += 1
        log.warning("provider %s unavailable (%s); trying another", address, error.details())

    # --8<-- [start:attempts]
    def _attempts(self, timeout: float | None) -> Iterator[tuple[str, float]]:
        """(provider, seconds left) for each attempt of one call, until its deadline."""
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        tried: set[str] = set()
        attempted = False
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (attempted and remaining < LAST_RETRY_MIN):
                return
            address = self._pick(tried, deadline)
            if address is None:
                if not tried:
                    return  # none registered before the deadline
                # Every provider failed once: give them a moment (a restart, Redis coming
                # back), then go round again. Bounded by the deadline.
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 1.0)
                tried.clear()
                continue
            tried.add(address)
            self.last_provider = address
            attempted = True
            yield address, deadline - time.monotonic()

    def _call(
        self, method: str, request: Any, timeout: float | None, metadata: Metadata = None
    ) -> Any:
        last: grpc.RpcError | None = None
        for address, remaining in self._attempts(timeout):
            try:
                stub = self._stub(address)
                return getattr(stub, method)(request, timeout=remaining, metadata=metadata)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = exc
                self.unavailable(address, exc)
        if last is not None:
            raise NoProvider(
                grpc.StatusCode.UNAVAILABLE,
                f"no TaskService provider answered {method} in time: {last.details()}",
            )
        raise NoProvider(
            grpc.StatusCode.UNAVAILABLE,
            f"no TaskService provider registered under {TASK_SERVICE}",
        )

    # --8<-- [end:attempts]

    # -- the TaskService -------------------------------------------------------------------
    # --8<-- [start:submit]
    def submit(
        self, request: pb.SubmitRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.SubmitResponse:
        # A requestId makes the failover below safe: a provider may die after storing the task.
        return self._call("Submit", _with_request_id(request), timeout, metadata)

    # --8<-- [end:submit]

    def submit_composite(
        self,
        request: pb.SubmitCompositeRequest,
        timeout: float | None = None,
        metadata: Metadata = None,
    ) -> pb.SubmitResponse:
        # As submit: the request id makes a failover after a stored-but-unanswered call safe.
        if not request.request_id:
            copy = pb.SubmitCompositeRequest()
            copy.CopyFrom(request)
            copy.request_id = str(uuid.uuid4())
            request = copy
        return self._call("SubmitComposite", request, timeout, metadata)

    def get_task_info(
        self, task_id: str, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.TaskInfo:
        request = pb.GetTaskInfoRequest(task_id=task_id)
        return self._call("GetTaskInfo", request, timeout, metadata)

    def cancel(
        self, task_id: str, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.CancelResponse:
        return self._call("Cancel", pb.CancelRequest(task_id=task_id), timeout, metadata)

    def retry(
        self,
        task_id: str,
        request_id: str = "",
        timeout: float | None = None,
        metadata: Metadata = None,
    ) -> pb.RetryResponse:
        request = pb.RetryRequest(task_id=task_id, request_id=request_id or str(uuid.uuid4()))
        return self._call("Retry", request, timeout, metadata)

    def list(
        self, request: pb.ListRequest, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.ListResponse:
        return self._call("List", request, timeout, metadata)

    def list_agents(
        self, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.ListAgentsResponse:
        return self._call("ListAgents", pb.ListAgentsRequest(), timeout, metadata)

    # -- cron schedules: each call is safe to repeat on another provider (a create that
    # -- stored before its provider died answers ALREADY_EXISTS the second time) -------------
    def create_schedule(
        self, spec: pb.ScheduleSpec, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        return self._call("CreateSchedule", pb.CreateScheduleRequest(spec=spec), timeout, metadata)

    def get_schedule(
        self, name: str, preview: int = 0, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        request = pb.GetScheduleRequest(name=name, preview=preview)
        return self._call("GetSchedule", request, timeout, metadata)

    def list_schedules(
        self, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.ListSchedulesResponse:
        return self._call("ListSchedules", pb.ListSchedulesRequest(), timeout, metadata)

    def set_schedule_suspended(
        self, name: str, suspend: bool, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.Schedule:
        request = pb.SetScheduleSuspendedRequest(name=name, suspend=suspend)
        return self._call("SetScheduleSuspended", request, timeout, metadata)

    def delete_schedule(
        self, name: str, timeout: float | None = None, metadata: Metadata = None
    ) -> pb.DeleteScheduleResponse:
        request = pb.DeleteScheduleRequest(name=name)
        return self._call("DeleteSchedule", request, timeout, metadata)

    def preview_schedule(
        self,
        schedule: str,
        time_zone: str = "",
        count: int = 0,
        timeout: float | None = None,
        metadata: Metadata = None,
    ) -> pb.PreviewScheduleResponse:
        request = pb.PreviewScheduleRequest(schedule=schedule, time_zone=time_zone, count=count)
        return self._call("PreviewSchedule", request, timeout, metadata)

    # --8<-- [start:watch]
    def watch(
        self,
        task_id: str,
        from_transition: int = 0,
        from_log: int = 0,
        timeout: float | None = None,
        metadata: Metadata = None,
    ) -> Iterator[pb.WatchEvent]:
        """Every transition and log line of the task from the given positions, then the final
        task; across providers, each event once, in order within its kind."""
        cursor = WatchCursor(task_id, from_transition, from_log)
        last: grpc.RpcError | None = None
        for address, remaining in self._attempts(timeout):
            try:
                for event in self._stub(address).Watch(
                    cursor.request(), timeout=remaining, metadata=metadata
                ):
                    final = cursor.passed(event)
                    yield event
                    if final:
                        return
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                last = exc
                self.unavailable(address, exc)
        raise cursor.cannot_continue(last)

    # --8<-- [end:watch]


def _with_request_id(request: pb.SubmitRequest) -> pb.SubmitRequest:
    if request.request_id:
        return request
    copy = pb.SubmitRequest()
    copy.CopyFrom(request)
    copy.request_id = str(uuid.uuid4())
    return copy
