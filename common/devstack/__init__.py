"""Native dev stack: real Redis, ZooKeeper and Kafka started by the project itself.

Used by `tasklab dev up/down`, `make stageN-local`, the test fixtures and the benchmarks.
"""

from common.devstack.base import NativeService, RunningService, ServiceUnavailable, free_port
from common.devstack.stack import DevStack, services_for_stage

__all__ = [
    "DevStack",
    "NativeService",
    "RunningService",
    "ServiceUnavailable",
    "free_port",
    "services_for_stage",
]
