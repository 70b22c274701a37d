"""The transition table and the rule that no illegal or stale write is ever accepted."""

from hypothesis import given, settings

from common.adapters.memory_store import InMemoryTaskStore
from common.adapters.redis_scripts import legal_table_lua
from common.domain.transitions import (
    LEGAL_TRANSITIONS,
    NEW_ATTEMPT_ON,
    TERMINAL_STATES,
    TaskStatus,
    is_legal,
)
from common.testing.properties import check_writes, writes


def test_terminal_states_have_no_way_out():
    assert TERMINAL_STATES == {
        TaskStatus.SUCCESS,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
        TaskStatus.SKIPPED,
    }
    for state in TERMINAL_STATES:
        assert not any(is_legal(state, dst) for dst in TaskStatus)


def test_every_state_is_reachable_from_where_a_task_starts():
    # A task starts PENDING; a composite's child starts WAITING.
    starts = {TaskStatus.PENDING, TaskStatus.WAITING}
    seen, frontier = set(starts), list(starts)
    while frontier:
        for nxt in LEGAL_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen == set(TaskStatus)


def test_every_non_terminal_state_can_be_cancelled():
    for state, nexts in LEGAL_TRANSITIONS.items():
        if state not in TERMINAL_STATES:
            assert TaskStatus.CANCELLED in nexts


def test_going_back_to_pending_starts_a_new_attempt_but_a_childs_release_its_first():
    assert NEW_ATTEMPT_ON == {
        (TaskStatus.SCHEDULED, TaskStatus.PENDING),
        (TaskStatus.DISPATCHED, TaskStatus.PENDING),
        (TaskStatus.RUNNING, TaskStatus.PENDING),
    }
    # The store's transition() does the same: test_composite_store.py releases a child on
    # Redis and finds it at attempt 1.


def test_the_lua_table_is_generated_from_the_python_table():
    lua = legal_table_lua()
    for src, nexts in LEGAL_TRANSITIONS.items():
        line = next(x for x in lua.splitlines() if x.strip().startswith(f"{src.value} ="))
        for dst in TaskStatus:
            assert (f"{dst.value} = true" in line) == (dst in nexts), (src, dst)


@settings(max_examples=300, deadline=None)
@given(writes)
def test_no_illegal_or_stale_transition_is_ever_accepted_in_memory(ws):
    store = InMemoryTaskStore()

    def set_fence(value: int) -> None:
        store.fence = value

    check_writes(store, ws, set_fence)
