"""The providers' AuthInterceptor: real `tasklab run rpc --stage 4` processes with API_KEYS and
JWT_SECRET set, called with the REST API's credentials as gRPC metadata.

The platform under the providers (scheduler, agents, manager) is not started: whether a call
gets past the interceptor shows in its status code (a submitted task stays PENDING, an unknown
task is NOT_FOUND, both only reachable after auth), so Redis and ZooKeeper are all it needs.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from kazoo.client import KazooClient
from rpc_support import Stage4, shell, stub

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.rpc.gen import task_service_pb2 as pb
from common.rpc.proxy import TaskServiceProxy
from common.rpc.registry import TASK_SERVICE
from common.security.authenticator import fingerprint

pytestmark = pytest.mark.integration

AUTH_DB = 6
SECRET = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f"
READER, WRITER = "rpc-reader-key-1", "rpc-writer-key-2"
KEYS = {READER: ["TaskRead"], WRITER: ["TaskWrite"]}
UNKNOWN_TASK = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def front(redis_service, zookeeper_service, tmp_path_factory) -> Iterator[Stage4]:
    url = redis_service.env["TASKLAB_REDIS_URL"].rsplit("/", 1)[0] + f"/{AUTH_DB}"
    client = redis_client(url)
    client.flushdb()
    chroot = f"/tasklab-s4auth-{uuid.uuid4().hex[:8]}"
    hosts = zookeeper_service.env["TASKLAB_ZK_HOSTS"]
    bootstrap = KazooClient(hosts=hosts)
    bootstrap.start(timeout=10)
    bootstrap.ensure_path(chroot + TASK_SERVICE)
    bootstrap.stop()
    bootstrap.close()
    zk = KazooClient(hosts=hosts + chroot)
    zk.start(timeout=10)
    env = {"TASKLAB_REDIS_URL": url, **zookeeper_service.env, "TASKLAB_ZK_CHROOT": chroot}
    tasks = TaskClient(RedisTaskStore(client))
    platform = Stage4(env, tmp_path_factory.mktemp("rpc-auth"), zk, tasks=tasks)
    try:
        yield platform
    finally:
        platform.stop_all()
        zk.stop()
        zk.close()


@pytest.fixture(scope="module")
def secured(front: Stage4) -> str:
    return front.start_provider(
        "rpc-secured", TASKLAB_API_KEYS=json.dumps(KEYS), TASKLAB_JWT_SECRET=SECRET
    )


@pytest.fixture(scope="module")
def proxy(front: Stage4, secured: str) -> Iterator[TaskServiceProxy]:
    proxy = TaskServiceProxy(front.zk, default_timeout=10.0).start()
    yield proxy
    proxy.close()


def key(value: str) -> list[tuple[str, str]]:
    return [("x-api-key", value)]


def bearer(**claims) -> list[tuple[str, str]]:
    body = {"sub": "alice", "exp": int(time.time()) + 60, "roles": ["TaskWrite"], **claims}
    return [("authorization", f"Bearer {jwt.encode(body, SECRET, 'HS256')}")]


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # a stream fails when it is read
            list(result)
    return err.value.code(), err.value.details()


def test_every_task_service_method_refuses_a_caller_without_credentials(secured):
    s = stub(secured)
    calls = [
        (s.Submit, shell("true")),
        (s.GetTaskInfo, pb.GetTaskInfoRequest(task_id=UNKNOWN_TASK)),
        (s.Cancel, pb.CancelRequest(task_id=UNKNOWN_TASK)),
        (s.Retry, pb.RetryRequest(task_id=UNKNOWN_TASK)),
        (s.List, pb.ListRequest()),
        (s.Watch, pb.WatchRequest(task_id=UNKNOWN_TASK)),
    ]
    for method, request in calls:
        code, details = code_of(method, request, timeout=5)
        assert code == grpc.StatusCode.UNAUTHENTICATED, (method, details)
        assert "no credential" in details


def test_an_unknown_key_or_an_expired_token_is_unauthenticated(secured):
    s = stub(secured)
    request = pb.ListRequest()
    assert code_of(s.List, request, metadata=key("nope"), timeout=5) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown API key",
    )
    expired = bearer(exp=int(time.time()) - 10)
    assert code_of(s.List, request, metadata=expired, timeout=5) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "token expired",
    )


def test_a_reader_key_may_read_but_not_submit_cancel_or_retry(secured):
    s = stub(secured)
    # Reads get past auth: List answers, an unknown task is NOT_FOUND (not UNAUTHENTICATED)
    assert s.List(pb.ListRequest(), metadata=key(READER), timeout=5) is not None
    info = (s.GetTaskInfo, pb.GetTaskInfoRequest(task_id=UNKNOWN_TASK))
    assert code_of(*info, metadata=key(READER), timeout=5)[0] == grpc.StatusCode.NOT_FOUND
    watch = (s.Watch, pb.WatchRequest(task_id=UNKNOWN_TASK))
    assert code_of(*watch, metadata=key(READER), timeout=5)[0] == grpc.StatusCode.NOT_FOUND
    for method, request in (
        (s.Submit, shell("true")),
        (s.Cancel, pb.CancelRequest(task_id=UNKNOWN_TASK)),
        (s.Retry, pb.RetryRequest(task_id=UNKNOWN_TASK)),
    ):
        code, details = code_of(method, request, metadata=key(READER), timeout=5)
        assert code == grpc.StatusCode.PERMISSION_DENIED
        assert "needs the TaskWrite role" in details and fingerprint(READER) in details
        assert READER not in details


def test_a_writer_key_through_the_proxy_submits_and_reads_its_task(proxy, front, secured):
    answer = proxy.submit(shell("echo hi"), metadata=key(WRITER))
    assert answer.created and answer.task.status == pb.PENDING
    assert proxy.providers() == [secured], "the secured provider is the only one"
    info = proxy.get_task_info(answer.task.task_id, metadata=key(WRITER))
    assert info.task.task_id == answer.task.task_id
    assert front.tasks.get(answer.task.task_id) is not None, "the task really is in Redis"


def test_a_bearer_token_works_through_the_proxy_and_its_roles_apply(proxy):
    answer = proxy.submit(shell("true"), metadata=bearer())
    assert answer.created
    read_only = bearer(roles=["TaskRead"])
    with pytest.raises(grpc.RpcError) as err:
        proxy.submit(shell("true"), metadata=read_only)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_health_and_reflection_stay_open_without_credentials(secured):
    channel = grpc.insecure_channel(secured)
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="tasklab.v1.TaskService")
    answer = health.Check(request, timeout=5)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert "tasklab.v1.TaskService" in ProtoReflectionDescriptorDatabase(channel).get_services()


def test_a_provider_without_keys_or_secret_lets_every_call_through(front):
    # The local profile's default, which every other stage 4 test runs with
    open_provider = front.start_provider("rpc-open")
    try:
        assert stub(open_provider).Submit(shell("true"), timeout=5).created
    finally:
        front.providers[open_provider].stop()  # the module's proxy is for the secured one
