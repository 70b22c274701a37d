"""The provider registry: each TaskService provider is an ephemeral ZooKeeper node.

`/services/TaskService/{host:port}`, with JSON metadata (host, port, pid, startedAt, version).
Ephemeral for the reason agents are (common/coordination/registry.py): the node lives as long
as the provider's session, so a provider that dies, hangs or is cut off disappears from every
client's view without announcing anything. The node's name is the address, so a client needs
no read of the data to dial it; the data is for people and tools (`tasklab`, zkCli's `get`).

After a session loss (LOST) the node is gone; the provider re-creates it as soon as a new
session exists. The listener only wakes this registry's thread: kazoo's event thread must
never block on a ZooKeeper write.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version

from kazoo.exceptions import NodeExistsError, NoNodeError

from common.coordination.ephemeral import EphemeralRegistration
from common.coordination.zk import RetryingClient
from common.observability import get_logger

SERVICES = "/services"
SERVICE_NAME = "TaskService"
TASK_SERVICE = f"{SERVICES}/{SERVICE_NAME}"

log = get_logger("tasklab.rpc.registry")


def provider_node(address: str) -> str:
    return f"{TASK_SERVICE}/{address}"


def _version() -> str:
    try:
        return version("tasklab")
    except PackageNotFoundError:
        return "0+unknown"


# --8<-- [start:provider-info]
@dataclass(frozen=True)
class ProviderInfo:
    host: str
    port: int
    pid: int = field(default_factory=os.getpid)
    startedAt: float = field(default_factory=time.time)  # noqa: N815 - the JSON name
    version: str = field(default_factory=_version)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ProviderInfo:
        return cls(**json.loads(raw))


# --8<-- [end:provider-info]


class ProviderRegistration(EphemeralRegistration):
    def __init__(self, zk: RetryingClient, info: ProviderInfo) -> None:
        super().__init__(zk, provider_node(info.address), "rpc-registry", log)
        self.info = info

    # --8<-- [start:publish]
    def _publish(self) -> None:
        stat = self.zk.exists(self.path)
        if stat is not None and stat.ephemeralOwner == self.zk.session_id:
            return
        if stat is not None:
            # A previous provider on this very address (killed, its session not yet expired):
            # the address is ours now, so its node is stale. Replace it.
            try:
                self.zk.delete(self.path)
            except NoNodeError:
                pass
        try:
            self.zk.create(self.path, self.info.to_json(), ephemeral=True, makepath=True)
        except NodeExistsError:
            # Our own create, retried after a lost reply (zk.RETRIED_CALLS): fine if it is ours.
            stat = self.zk.exists(self.path)
            if stat is None or stat.ephemeralOwner != self.zk.session_id:
                raise

    # --8<-- [end:publish]
