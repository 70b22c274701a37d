"""The transition property on the real Lua scripts (the unit test runs it in memory)."""

from hypothesis import HealthCheck, given, settings

from common import keys
from common.adapters.redis_store import RedisTaskStore
from common.testing.properties import check_writes, writes


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ws=writes)
def test_no_illegal_or_stale_transition_is_ever_accepted_by_the_lua_scripts(redis_client, ws):
    store = RedisTaskStore(redis_client)
    check_writes(store, ws, lambda value: redis_client.set(keys.SCHEDULER_FENCE, value))
