"""AsyncTaskServiceProxy: the TaskService proxy's calls on an asyncio loop (grpc.aio).

Pattern: Proxy (stage 4), the asynchronous face of common.rpc.proxy.TaskServiceProxy. The REST
API's submit route awaits its call on the event loop instead of blocking a worker thread: a
blocking stub costs every request a hop to the thread pool and back (a queue, a condition
variable, a second thread taking the GIL), and that hop was a sixth of the API's CPU per submit.

What it shares with the blocking proxy it wraps, so both agree at every moment:
- discovery: the same ZooKeeper ChildrenWatch (the blocking proxy's) says who the providers are;
- balancing and suspicion: the same round robin and the same list of providers that answered
  UNAVAILABLE lately (`TaskServiceProxy.choose` / `.unavailable`);
- failover: UNAVAILABLE is tried again on the next provider until the call's deadline, any
  other status is the answer. Safe for the same reason: Submit always carries a requestId.

What it owns: its grpc.aio channels. A grpc.aio channel belongs to the event loop it was made
on and fails on any other ("attached to a different loop"), so channels are made lazily by the
first call on the running loop, never when the app is built, and a call from another loop (a
test client starting a loop per request) gets channels of its own. A failed call is raised as
`CallFailed`, a `grpc.Call` like the blocking stub's errors, so the status -> problem table
(common.api.rpc_problems) reads its code and rich details the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio

from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.proxy import (
    CLIENT_OPTIONS,
    LAST_RETRY_MIN,
    NoProvider,
    TaskServiceProxy,
    WatchCursor,
    _with_request_id,
)
from common.rpc.registry import TASK_SERVICE

# How often a call waiting for a first provider to register looks again: the blocking proxy
# sleeps on a condition the watch notifies; a coroutine must not, so it polls (bounded by the
# call's deadline).
REGISTRATION_POLL = 0.05


class CallFailed(grpc.RpcError, grpc.Call):
    """A grpc.aio call's failure as a finished `grpc.Call`: its code, message and trailers."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.details())
        self._code = error.code()
        self._details = error.details()
        self._trailers = tuple(error.trailing_metadata() or ())

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self):
        return self._trailers

    def initial_metadata(self):
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self):
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:
        return False


class AsyncTaskServiceProxy:
    def __init__(self, proxy: TaskServiceProxy) -> None:
        self._proxy = proxy
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channels: dict[str, tuple[grpc.aio.Channel, pb_grpc.TaskServiceStub]] = {}

    @property
    def default_timeout(self) -> float:
        return self._proxy.default_timeout

    def providers(self) -> list[str]:
        return self._proxy.providers()

    # -- channels, one per provider, on the running loop ------------------------------------
    def _stub(self, address: str) -> pb_grpc.TaskServiceStub:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Channels of another (maybe closed) loop cannot be used, nor closed, from here:
            # dropped, their sockets go with their loop.
            self._loop, self._channels = loop, {}
        if address not in self._channels:
            self._forget_departed()
            channel = grpc.aio.insecure_channel(address, options=CLIENT_OPTIONS)
            self._channels[address] = (channel, pb_grpc.TaskServiceStub(channel))
        return self._channels[address][1]

    def _forget_departed(self) -> None:
        """Close the channels of providers that left (their node is gone from ZooKeeper)."""
        current = set(self._proxy.providers())
        for address in [a for a in self._channels if a not in current]:
            channel, _ = self._channels.pop(address)
            asyncio.ensure_future(channel.close())

    async def close(self) -> None:
        """Close the channels; call it on the loop that made them (the app's lifespan)."""
        channels = [c for c, _ in self._channels.values()]
        self._channels = {}
        same_loop = self._loop is asyncio.get_running_loop()
        self._loop = None
        if same_loop:
            for channel in channels:
                await channel.close()

    # -- attempts and failover, as TaskServiceProxy._attempts ---------------------------------
    async def _attempts(self, timeout: float | None) -> AsyncIterator[tuple[str, float]]:
        deadline = time.monotonic() + (self.default_timeout if timeout is None else timeout)
        tried: set[str] = set()
        attempted = False
        pause = 0.05
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (attempted and remaining < LAST_RETRY_MIN):
                return
            address = self._proxy.choose(tried)
            if address is None:
                if not tried and not self._proxy.providers():
                    # None registered yet: wait for one, until the deadline.
                    await asyncio.sleep(min(REGISTRATION_POLL, remaining))
                    continue
                # Every provider failed once: give them a moment (a restart, Redis coming
                # back), then go round again. Bounded by the deadline.
                await asyncio.sleep(min(pause, max(0.0, remaining)))
                pause = min(pause * 2, 1.0)
                tried.clear()
                continue
            tried.add(address)
            self._proxy.last_provider = address
            attempted = True
            yield address, deadline - time.monotonic()

    async def _call(self, method: str, request: Any, timeout: float | None, metadata=None) -> Any:
        last: grpc.RpcError | None = None
        tried = False
        async for address, remaining in self._attempts(timeout):
            tried = True
            try:
                stub = self._stub(address)
                return await getattr(stub, method)(
                    request, timeout=remaining, metadata=_metadata(metadata)
                )
            except grpc.aio.AioRpcError as exc:
                last = self._failed(address, exc)
        if last is not None:
            raise NoProvider(
                grpc.StatusCode.UNAVAILABLE,
                f"no TaskService provider answered {method} in time: {last.details()}",
            )
        raise NoProvider(
            grpc.StatusCode.UNAVAILABLE,
            f"no TaskService provider registered under {TASK_SERVICE}"
            if not tried
            else f"no TaskService provider answered {method} in time",
        )

    # -- the calls the submit route makes ------------------------------------------------------
    async def submit(
        self, request: pb.SubmitRequest, timeout: float | None = None, metadata=None
    ) -> pb.SubmitResponse:
        # A requestId makes the failover safe: a provider may die after storing the task.
        return await self._call("Submit", _with_request_id(request), timeout, metadata)

    async def get_task_info(
        self, task_id: str, timeout: float | None = None, metadata=None
    ) -> pb.TaskInfo:
        request = pb.GetTaskInfoRequest(task_id=task_id)
        return await self._call("GetTaskInfo", request, timeout, metadata)

    async def watch(
        self,
        task_id: str,
        from_transition: int = 0,
        from_log: int = 0,
        timeout: float | None = None,
        metadata=None,
    ) -> AsyncIterator[pb.WatchEvent]:
        """As TaskServiceProxy.watch: each event once across providers, then the final task."""
        cursor = WatchCursor(task_id, from_transition, from_log)
        last: grpc.RpcError | None = None
        async for address, remaining in self._attempts(timeout):
            call = self._stub(address).Watch(
                cursor.request(), timeout=remaining, metadata=_metadata(metadata)
            )
            try:
                async for event in call:
                    final = cursor.passed(event)
                    yield event
                    if final:
                        return
                return
            except grpc.aio.AioRpcError as exc:
                last = self._failed(address, exc)
            finally:
                # A consumer that stops early (the final event, a cancelled request) must not
                # leave the stream open on the provider.
                call.cancel()
        raise cursor.cannot_continue(last)

    def _failed(self, address: str, exc: grpc.aio.AioRpcError) -> CallFailed:
        """A call's failure: UNAVAILABLE marks the provider suspect and is returned (the
        caller tries the next one); any other status is the answer, raised."""
        failed = CallFailed(exc)
        if failed.code() != grpc.StatusCode.UNAVAILABLE:
            raise failed from None
        self._proxy.unavailable(address, failed)
        return failed


def _metadata(metadata) -> tuple[tuple[str, str], ...] | None:
    # grpc.aio wants a tuple of pairs (or its Metadata); the routes build lists.
    return tuple(metadata) if metadata else None
