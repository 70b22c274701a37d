"""The ZooKeeper client: one per process, built on first use, every call retried.

Pattern: Singleton as a cached factory (introduced in stage 1 for settings, used here in stage
2). `zk_client(hosts, chroot, timeout)` is wrapped in `functools.lru_cache`, so the agent
registry, the live-agents view and the election in one process share one session. That matters
more than saving a socket: an ephemeral node lives exactly as long as the session that created
it, so two sessions in one process could disagree about whether "this agent" is alive.

Pattern: Proxy (introduced in stage 2). `RetryingClient` stands in front of the KazooClient and
runs every data call through kazoo's `KazooRetry`: a connection loss (and, kazoo's default, a
session expiry) in the middle of a call is retried with backoff instead of surfacing as an
exception at every call site. A call retried after an expiry runs on the new session; the
callers' own listeners (re-register, step down) handle what the expiry means. Recipes (Lock,
ChildrenWatch) and listeners pass straight through to the real client.
"""

from __future__ import annotations

import posixpath
from functools import lru_cache
from typing import Any

from kazoo.client import KazooClient
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry

from common.config import Settings

# --8<-- [start:proxy]
# Only idempotent-enough calls are retried. `create` is in the list on purpose, and its caller
# must know why: if the connection drops after the server applied a create but before the reply
# arrived, the retry fails with NodeExistsError for a node this very session made.
RETRIED_CALLS = frozenset(
    {"create", "delete", "ensure_path", "exists", "get", "get_children", "set", "sync"}
)


class CoordinationUnavailable(RuntimeError):
    """ZooKeeper could not be reached; the message is one line, fit for a terminal."""


class RetryingClient:
    """Proxy of a KazooClient whose data calls go through KazooRetry."""

    def __init__(self, client: KazooClient, retry: KazooRetry) -> None:
        self._client = client
        self._retry = retry

    @property
    def raw(self) -> KazooClient:
        return self._client

    @property
    def session_id(self) -> int | None:
        cid = self._client.client_id
        return cid[0] if cid else None

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in RETRIED_CALLS:
            return attr

        def retried(*args: Any, **kwargs: Any) -> Any:
            # A KazooRetry counts attempts on itself; a copy per call keeps two threads (the
            # registry and the election, say) from sharing one counter and one deadline.
            return self._retry.copy()(attr, *args, **kwargs)

        return retried

    def close(self) -> None:
        # stop() closes the session cleanly: ZooKeeper deletes this process's ephemeral nodes
        # at once, instead of after a session timeout of silence.
        self._client.stop()
        self._client.close()


# --8<-- [end:proxy]


def _fast_reconnect() -> KazooRetry:
    # Reconnect attempts never give up and never wait long: a session survives a ZooKeeper
    # restart only if the client is back before the session timeout runs out.
    return KazooRetry(max_tries=-1, delay=0.05, backoff=1.5, max_delay=0.5)


def _ensure_chroot(hosts: str, chroot: str, timeout: float) -> None:
    # kazoo cannot create its own chroot (every path, "/" included, is prefixed with it), so a
    # short-lived client without one creates it first.
    bootstrap = KazooClient(hosts=hosts, timeout=timeout, connection_retry=_fast_reconnect())
    try:
        bootstrap.start(timeout=timeout)
        bootstrap.ensure_path(chroot)
    finally:
        bootstrap.stop()
        bootstrap.close()


# --8<-- [start:cached-factory]
@lru_cache(maxsize=4)
def zk_client(hosts: str, chroot: str = "", session_timeout: float = 10.0) -> RetryingClient:
    """A started client for `hosts` under `chroot`; the same object on every later call."""
    chroot = posixpath.normpath("/" + chroot.strip("/")) if chroot.strip("/") else ""
    connect_timeout = max(5.0, session_timeout)
    try:
        if chroot:
            _ensure_chroot(hosts, chroot, connect_timeout)
        client = KazooClient(
            hosts=hosts + chroot,
            timeout=session_timeout,
            connection_retry=_fast_reconnect(),
        )
        client.start(timeout=connect_timeout)
    except KazooTimeoutError:
        raise CoordinationUnavailable(
            f"cannot reach ZooKeeper at {hosts} within {connect_timeout:.0f}s; is it running? "
            "(`tasklab dev up --stage 2` starts one)"
        ) from None
    # Bounded by the session timeout: past it, the session this call belonged to may be gone
    # and the caller has to decide what that means (an agent re-registers, a leader steps down).
    retry = KazooRetry(max_tries=-1, delay=0.05, backoff=2, max_delay=1.0, deadline=session_timeout)
    return RetryingClient(client, retry)


def get_zk(settings: Settings) -> RetryingClient:
    return zk_client(settings.zk_hosts, settings.zk_chroot, settings.zk_session_timeout)


def close_zk(settings: Settings) -> None:
    """Close this process's cached client (if it was built) and forget it."""
    if zk_client.cache_info().currsize > 0:
        get_zk(settings).close()
    zk_client.cache_clear()


# --8<-- [end:cached-factory]
