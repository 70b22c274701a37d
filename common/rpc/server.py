"""The TaskService provider process: gRPC server, health, reflection, ZooKeeper registration.

`run_provider(settings)` is the `rpc` role of stage 4 (`tasklab run rpc --stage 4`):
1. serve TaskService on `rpc_address` (port 0 = a free port), with the standard health service
   (grpc.health.v1) and server reflection, and a receive limit derived from max_payload_bytes
   so a request larger than the largest composite document is refused by gRPC itself
   (RESOURCE_EXHAUSTED) before it is parsed;
   every TaskService call checked by the AuthInterceptor (the REST API's keys and tokens, one
   role per method; health and reflection open; with auth off, everything passes);
2. register `/services/TaskService/{host:port}` in ZooKeeper, where clients find it;
3. on SIGTERM: leave ZooKeeper, report NOT_SERVING, let calls in flight finish
   (rpc_stop_grace), stop.
Health follows Redis: a provider whose Redis does not answer reports NOT_SERVING, so a load
balancer or the REST API's readiness can tell it apart from a healthy one.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from redis.exceptions import RedisError

from common.adapters.redis_client import redis_client
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_metrics import observe_redis
from common.adapters.redis_schedule import RedisScheduleStore
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.config import Settings
from common.coordination.zk import CoordinationUnavailable, close_zk, get_zk
from common.domain.composite import DOCUMENT_PAYLOAD_FACTOR
from common.domain.task import MESSAGE_ENVELOPE_BYTES
from common.observability import get_logger
from common.observability.health import CHECKS
from common.rpc.auth import AuthInterceptor
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.gen import task_service_pb2_grpc as pb_grpc
from common.rpc.metrics import MetricsInterceptor
from common.rpc.registry import ProviderInfo, ProviderRegistration
from common.rpc.service import TaskServicer
from common.security.authenticator import Authenticator

SERVICE_FULL_NAME = pb.DESCRIPTOR.services_by_name["TaskService"].full_name  # tasklab.v1...

log = get_logger("tasklab.rpc")


def max_message_bytes(settings: Settings) -> int:
    """The largest request a provider reads: a composite document at its limit (as many
    payloads as DOCUMENT_PAYLOAD_FACTOR) plus room for the rest of the message (a protobuf
    string is its bytes plus a few bytes of length). gRPC has one limit per server, not per
    method, so a plain Submit between one payload and this is read and then refused by the
    validator (RESOURCE_EXHAUSTED with its field violation), not by gRPC."""
    return DOCUMENT_PAYLOAD_FACTOR * settings.max_payload_bytes + MESSAGE_ENVELOPE_BYTES


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def advertised_host(settings: Settings, bound_host: str) -> str:
    if settings.rpc_advertise_host:
        return settings.rpc_advertise_host
    if bound_host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return bound_host


class Provider:
    """A started gRPC server with its servicer and health service (no registration)."""

    def __init__(self, settings: Settings) -> None:
        # First: a provider that must check credentials and has none to check against refuses
        # to start (ConfigError, one line) before it opens a port.
        self.authenticator = Authenticator.from_settings(settings)
        client = redis_client(settings.redis_url)
        self.redis = client
        self.servicer = TaskServicer(
            TaskClient(
                RedisTaskStore(client),
                settings.max_payload_bytes,
                composites=RedisCompositeStore(client),
            ),
            client,
            watch_poll=settings.rpc_watch_poll,
            watch_max=settings.rpc_watch_max,
            # The cached client the registration uses too: ListAgents reads each live agent's
            # capacity from its /live-agents node.
            zk=get_zk(settings),
            schedules=RedisScheduleStore(client),
        )
        limit = max_message_bytes(settings)
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.rpc_workers),
            options=[
                ("grpc.max_receive_message_length", limit),
                # Answers carry logs: let them be as large as the client accepts.
                ("grpc.max_send_message_length", -1),
                # One address, one provider: a second process must fail to bind, not share it.
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=settings.rpc_workers * 4,
            # Metrics first: it sees every call as the caller did, auth's refusals included.
            interceptors=[MetricsInterceptor(), AuthInterceptor(self.authenticator)],
        )
        pb_grpc.add_TaskServiceServicer_to_server(self.servicer, self.server)
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_FULL_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        host, port = split_address(settings.rpc_address)
        bound = self.server.add_insecure_port(
            f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        )
        if bound == 0:
            raise OSError(f"cannot listen on {settings.rpc_address}")
        self.host, self.port = host, bound
        # The history names the provider by the port it really got (port 0 = the OS chose).
        self.servicer.actor = f"rpc:{host}:{bound}"
        self._stopping = threading.Event()

    def start(self) -> None:
        self.server.start()
        self._set_serving(True)
        threading.Thread(target=self._watch_redis, name="rpc-health", daemon=True).start()

    def _set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", SERVICE_FULL_NAME):
            self.health.set(name, status)

    def _watch_redis(self) -> None:
        serving = True
        while not self._stopping.wait(1.0):
            try:
                self.redis.ping()
                ok = True
            except RedisError:
                ok = False
            if ok != serving:
                serving = ok
                self._set_serving(ok)
                log.warning(
                    "Redis %s: health %s",
                    "back" if ok else "down",
                    "SERVING" if ok else "NOT_SERVING",
                )

    def stop(self, grace: float) -> None:
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait(grace + 1)


def _registered(registration: ProviderRegistration) -> tuple[bool, str]:
    """Readiness: the session is connected, so clients can find this provider."""
    state = registration.zk.raw.state
    return state == "CONNECTED", f"session {state}, node {registration.path}"


def run_provider(settings: Settings) -> None:
    try:
        provider = Provider(settings)
    except (OSError, RuntimeError) as exc:
        sys.exit(f"error: cannot serve gRPC on {settings.rpc_address}: {exc}")
    provider.start()
    info = ProviderInfo(host=advertised_host(settings, provider.host), port=provider.port)
    try:
        registration = ProviderRegistration(get_zk(settings), info)
        registration.start()
    except CoordinationUnavailable as exc:
        provider.stop(0)
        sys.exit(f"error: {exc}")
    # The operator port (if served): the queues' state, and what this provider needs to answer.
    observe_redis(settings.redis_url)
    CHECKS.add("zookeeper", lambda: _registered(registration))
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    log.info(
        "TaskService serving on %s:%d, registered as %s",
        provider.host,
        provider.port,
        registration.path,
    )
    # Printed as well as logged: a script starting `tasklab run rpc` on port 0 reads it here.
    print(f"TASKLAB_RPC_ADDRESS={info.address}", flush=True)
    try:
        while not stopping.wait(1.0):
            pass
    finally:
        registration.stop()
        provider.stop(settings.rpc_stop_grace)
        close_zk(settings)
        log.info("TaskService on %s stopped", info.address)
