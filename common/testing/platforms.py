"""A stage 4 platform of a test module's own, on the session's services.

Several suites start the stage 4 roles themselves (the REST API tests, the console's browser
tests): each needs the same environment, a ZooKeeper chroot and a Kafka topic namespace of its
own, its topics created before any role starts, and the providers' registry path made, so a
proxy can watch it before the first provider registers.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from kazoo.client import KazooClient

from common.messaging.topics import ensure_topics
from common.rpc.registry import TASK_SERVICE

if TYPE_CHECKING:
    from common.testing.pytest_plugin import ServiceHandle


def stage4_environment(
    redis_url: str, zookeeper: ServiceHandle, kafka: ServiceHandle, label: str
) -> tuple[dict[str, str], KazooClient]:
    """The TASKLAB_* settings of a new platform, and a started ZooKeeper client on its chroot
    (the caller stops and closes it). `label` prefixes its chroot and topic namespace."""
    chroot = f"/tasklab-{label}-{uuid.uuid4().hex[:8]}"
    namespace = f"{label}{uuid.uuid4().hex[:8]}"
    env = {
        "TASKLAB_REDIS_URL": redis_url,
        **zookeeper.env,
        "TASKLAB_ZK_CHROOT": chroot,
        **kafka.env,
        "TASKLAB_KAFKA_NAMESPACE": namespace,
    }
    ensure_topics(env["TASKLAB_KAFKA_BOOTSTRAP"], namespace)
    hosts = zookeeper.env["TASKLAB_ZK_HOSTS"]
    bootstrap = KazooClient(hosts=hosts)
    bootstrap.start(timeout=10)
    try:
        bootstrap.ensure_path(chroot + TASK_SERVICE)
    finally:
        bootstrap.stop()
        bootstrap.close()
    zk = KazooClient(hosts=hosts + chroot)
    zk.start(timeout=10)
    return env, zk
