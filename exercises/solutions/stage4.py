"""Stage 4: a request id link in the REST chain (4.1), and least-outstanding balancing in the
TaskService proxy (4.2)."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from common.api import links
from common.rpc import proxy

REQUEST_ID = b"x-request-id"
MAX_REQUEST_ID = 128


def _fit(value: bytes) -> bool:
    # Printable ASCII only: no control characters to smuggle into our logs or headers.
    return 0 < len(value) <= MAX_REQUEST_ID and all(0x20 <= b <= 0x7E for b in value)


class RequestIdLink:
    """Every answer carries X-Request-ID: the caller's, when fit to echo, else a UUID4. The
    outermost link, so the 401/413/429 answers of the links inside it carry it too."""

    def __init__(self, app: links.ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: links.Scope, receive: links.Receive, send: links.Send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == REQUEST_ID), None)
        request_id = given if given is not None and _fit(given) else str(uuid.uuid4()).encode()
        scope.setdefault("state", {})["request_id"] = request_id.decode("ascii")

        async def send_with_id(message: links.Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k != REQUEST_ID]
                message["headers"] = [*headers, (REQUEST_ID, request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


_install_links = links.install_links


def install_links(app: Any, settings: Any, redis: Any) -> None:
    _install_links(app, settings, redis)
    app.add_middleware(RequestIdLink)  # added last: outside every other link


BALANCES = ("round-robin", "least-outstanding")


class _Counted:
    """A stub whose calls count as in flight on their provider until they return or raise
    (a streaming call: until its stream ends)."""

    def __init__(self, stub: Any, address: str, owner: TaskServiceProxy) -> None:
        self._stub, self._address, self._owner = stub, address, owner

    def __getattr__(self, method: str):
        target = getattr(self._stub, method)

        def call(*args, **kwargs):
            self._owner._begin(self._address)
            try:
                result = target(*args, **kwargs)
            except BaseException:
                self._owner._end(self._address)
                raise
            if method != "Watch":
                self._owner._end(self._address)
                return result
            return self._stream(result)

        return call

    def _stream(self, events):
        try:
            yield from events
        finally:
            self._owner._end(self._address)


class TaskServiceProxy(proxy.TaskServiceProxy):
    def __init__(
        self, zk: Any, default_timeout: float = proxy.DEFAULT_TIMEOUT, balance: str = "round-robin"
    ) -> None:
        if balance not in BALANCES:
            raise ValueError(f"unknown balance {balance!r}: one of {', '.join(BALANCES)}")
        super().__init__(zk, default_timeout)
        self.balance = balance
        self._outstanding: dict[str, int] = {}
        self._counts = threading.Lock()  # not self._lock: _stub takes that one

    def _begin(self, address: str) -> None:
        with self._counts:
            self._outstanding[address] = self._outstanding.get(address, 0) + 1

    def _end(self, address: str) -> None:
        with self._counts:
            self._outstanding[address] -= 1

    def _stub(self, address: str):
        return _Counted(super()._stub(address), address, self)

    def _pick(self, tried: set[str], deadline: float) -> str | None:
        if self.balance == "round-robin":
            return super()._pick(tried, deadline)
        with self._lock:
            while not self._providers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(min(remaining, 0.5))
            now = time.monotonic()
            fresh = [a for a in self._providers if a not in tried]
            healthy = [a for a in fresh if self._suspect.get(a, 0) <= now]
            choices = healthy or fresh
            if not choices:
                return None
            with self._counts:
                load = {a: self._outstanding.get(a, 0) for a in choices}
            least = [a for a in choices if load[a] == min(load.values())]
            address = least[self._next % len(least)]
            self._next += 1
            return address


def install() -> None:
    links.RequestIdLink = RequestIdLink
    links.install_links = install_links
    proxy.TaskServiceProxy = TaskServiceProxy
