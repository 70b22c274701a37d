"""A composite's child reaches its stage 3 agent with its place and its input: in the dispatch
the leader publishes, and in the one its relay publishes again (rebuilt from the inbox entry,
which holds only the spec, and the child's hash)."""

from __future__ import annotations

import pytest

from common import keys
from common.adapters.redis_composite import RedisCompositeStore
from common.adapters.redis_store import RedisTaskStore
from common.domain.composite import validate_composite
from common.messaging.clients import EventPublisher
from common.messaging.dispatch import KafkaDispatcher
from common.messaging.schemas import DispatchMessage, decode
from common.messaging.topics import DISPATCH
from common.ports.composite import Release

pytestmark = pytest.mark.integration

EPOCH = 2


def test_a_childs_dispatch_and_its_republished_copy_carry_its_place_and_input(
    bus, probe, redis_client
):
    composites = RedisCompositeStore(redis_client)
    spec = validate_composite(
        {
            "kind": "GROUP",
            "children": [{"taskType": "SHELL", "payload": "echo $TASKLAB_INPUT"}],
            "reduce": {"taskType": "SHELL", "payload": "echo $TASKLAB_INPUT"},
        }
    )
    parent, _ = composites.submit_composite(spec)
    _, reduce_id = composites.children(parent.task_id)
    publisher = EventPublisher(bus, "test-leader")
    dispatcher = KafkaDispatcher(
        redis_client, RedisTaskStore(redis_client), publisher, republish_after=0.0
    )
    try:
        assert dispatcher.raise_fence(EPOCH)[0]
        composites.start(parent.task_id, EPOCH, "coordinator")
        reduce_input = '[{"index":0,"result":"héllo\\nwörld"}]'
        released = composites.release(
            parent.task_id, [Release(reduce_id, {"input": reduce_input})], EPOCH, "coordinator"
        )
        assert released.count == 1
        scheduled = dispatcher.schedule(dispatcher.take(1.0), EPOCH, "leader")
        assert dispatcher.dispatch(scheduled, "agent-1", EPOCH, "leader").accepted
        # The relay's sweep finds the entry not taken up and publishes it again.
        assert dispatcher.republish_stale() == 1
        assert publisher.flush(15) == 0
    finally:
        publisher.close()
    got = probe.read(DISPATCH, lambda messages: len(messages) >= 2)
    for msg in got:
        task = decode(DispatchMessage, msg.value()).task()
        assert (task.task_id, task.parent_id, task.role) == (reduce_id, parent.task_id, "reduce")
        assert (task.shard_index, task.shard_total, task.input) == (0, 1, reduce_input)
    assert redis_client.llen(keys.agent_tasks("agent-1")) == 1
