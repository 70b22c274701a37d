"""Exercise 4.2, the proxy balances by load: least outstanding requests.

`TaskServiceProxy` (common/rpc/proxy.py) sends each call to the next provider in round-robin
order. Round robin ignores how busy a provider is: one stuck on slow calls (a long Watch, a
provider whose Redis is slow) keeps getting its share. Add a choice:

    TaskServiceProxy(zk, balance="least-outstanding")   # "round-robin", the default, as today

- the proxy counts the calls in flight to each provider (a call is in flight from the moment
  it is sent until it returns or raises, whatever it raises);
- the next call goes to a provider with the fewest in flight;
- among providers with equally few, round robin, as today;
- everything else stays: a provider already tried by this call, or suspect after an
  UNAVAILABLE, is still passed over first.

A balance the proxy does not know is a ValueError. No services (`make exercise-stage4`): the
test feeds the providers to `_on_children`, as the ZooKeeper watch would, and puts a fake
stub per provider in `_channels`, where `_stub` finds it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator

import grpc
import pytest

from common.rpc import proxy
from common.rpc.gen import task_service_pb2 as pb
from common.testing import eventually
from exercises.support import not_done

A, B = "127.0.0.1:50051", "127.0.0.1:50052"


class Provider:
    """A provider's stub: records each call; the first `hold` calls wait for `release`
    (bounded), so a test can keep them in flight; the others answer at once."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.hold = 0
        self.refuse = 0  # the first `refuse` calls (after the held ones) raise NOT_FOUND
        self.release = threading.Event()
        self.calls = 0
        self.in_flight = 0
        self._lock = threading.Lock()

    def GetTaskInfo(self, request, timeout=None, metadata=None):  # noqa: N802 (gRPC's name)
        with self._lock:
            self.calls += 1
            self.in_flight += 1
            held = self.calls <= self.hold
            refused = not held and self.calls <= self.hold + self.refuse
        try:
            if held:
                assert self.release.wait(10), "a held call was never let go"
            if refused:
                raise NotFound()
            return pb.TaskInfo(task=pb.Task(task_id=request.task_id, agent_id=self.address))
        finally:
            with self._lock:
                self.in_flight -= 1


class NotFound(grpc.RpcError):
    """The provider's answer "no such task": the call's answer, raised to the caller."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.NOT_FOUND

    def details(self) -> str:
        return "no such task"


class Closed:
    def close(self) -> None:
        pass


@pytest.fixture
def providers() -> Iterator[dict[str, Provider]]:
    found = {A: Provider(A), B: Provider(B)}
    yield found
    for p in found.values():
        p.release.set()  # never leave a thread waiting


def balanced(providers: dict[str, Provider], *registered: str) -> proxy.TaskServiceProxy:
    if "balance" not in inspect.signature(proxy.TaskServiceProxy).parameters:
        not_done("4.2", 'add balance="least-outstanding" to TaskServiceProxy(...)')
    client = proxy.TaskServiceProxy(object(), default_timeout=5, balance="least-outstanding")
    for address, provider in providers.items():
        client._channels[address] = (Closed(), provider)
    client._on_children(list(registered))
    return client


def where(client: proxy.TaskServiceProxy, n: int) -> list[str]:
    return [client.get_task_info(f"task-{i}").task.agent_id for i in range(n)]


def test_with_one_provider_busy_every_next_call_goes_to_the_idle_one(providers):
    client = balanced(providers, A)
    providers[A].hold = 3
    busy = [threading.Thread(target=client.get_task_info, args=(f"slow-{i}",)) for i in range(3)]
    for thread in busy:
        thread.start()
    eventually(lambda: providers[A].in_flight == 3, 5, message="three calls in flight on A")
    client._on_children([A, B])  # B registers while A is busy
    try:
        # B finishes each call before the next: A, three in flight, is never the least busy.
        assert where(client, 4) == [B] * 4
    finally:
        providers[A].release.set()
        for thread in busy:
            thread.join(10)
    assert providers[A].calls == 3


def test_ties_go_round_robin_and_a_call_that_finished_no_longer_counts(providers):
    client = balanced(providers, A, B)
    first = where(client, 4)
    assert sorted(first[:2]) == [A, B] and first[2:] == first[:2]


def test_a_call_that_raised_no_longer_counts_as_in_flight(providers):
    client = balanced(providers, A, B)
    providers[A].refuse = 1
    with pytest.raises(grpc.RpcError) as raised:
        client.get_task_info("gone")  # the first of a tie: A, which answers NOT_FOUND
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert providers[A].calls == 1
    # Both idle again: ties, so round robin, and A gets its turn again. (Had the refused call
    # stayed counted, A would look busy for ever.)
    assert A in where(client, 3)


def test_an_unknown_balance_is_refused():
    if "balance" not in inspect.signature(proxy.TaskServiceProxy).parameters:
        not_done("4.2", 'add balance="least-outstanding" to TaskServiceProxy(...)')
    with pytest.raises(ValueError, match="fastest"):
        proxy.TaskServiceProxy(object(), balance="fastest")
