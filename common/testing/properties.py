"""The transition property, runnable against any TaskStore (in-memory and Redis alike).

Property: whatever sequence of writes arrives (any target state, any attempt, any epoch, the
scheduler fence moving up), the store accepts a write if and only if it is legal in the table
and carries the current attempt and an epoch no older than the task's (and, when fenced, no
older than the fence). Everything else is rejected *and counted*, and leaves the task unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from common.domain.task import TaskSpec, TaskType
from common.domain.transitions import NEW_ATTEMPT_ON, TaskStatus, is_legal
from common.ports.task_store import TaskStore


@dataclass(frozen=True)
class Write:
    to: TaskStatus
    attempt_offset: int  # relative to the task's current attempt: 0 = current, -1 = stale
    epoch: int
    fenced: bool


def check_writes(store: TaskStore, writes: list[Write], set_fence=None) -> None:
    task, _ = store.submit(TaskSpec(task_type=TaskType.SHELL, payload="true"))
    fence = 0
    if set_fence is not None:
        set_fence(fence)  # the store may keep its fence from an earlier example
    rejected_before = sum(v for k, v in store.stats().items() if k.startswith("rejected"))
    expected_rejections = 0
    for n, w in enumerate(writes):
        if set_fence is not None and n % 5 == 4:
            fence += 1
            set_fence(fence)
        before = store.get(task.task_id)
        assert before is not None
        attempt = before.attempt + w.attempt_offset
        should_accept = (
            w.attempt_offset == 0
            and w.epoch >= before.epoch
            and (not w.fenced or w.epoch >= fence)
            and is_legal(before.status, w.to)
        )
        result = store.transition(
            task.task_id,
            w.to,
            attempt=attempt,
            epoch=w.epoch,
            actor="property",
            fenced=w.fenced,
        )
        after = store.get(task.task_id)
        assert after is not None
        assert result.accepted == should_accept, (w, before.status, before.attempt, result)
        if should_accept:
            assert after.status == w.to
            expected_attempt = before.attempt + ((before.status, w.to) in NEW_ATTEMPT_ON)
            assert after.attempt == expected_attempt
            assert after.epoch == max(before.epoch, w.epoch)
        else:
            expected_rejections += 1
            assert (after.status, after.attempt, after.epoch) == (
                before.status,
                before.attempt,
                before.epoch,
            )
    rejected_after = sum(v for k, v in store.stats().items() if k.startswith("rejected"))
    assert rejected_after - rejected_before == expected_rejections
    accepted = [h for h in store.history(task.task_id)][1:]
    assert len(accepted) == len(writes) - expected_rejections
    for h in accepted:
        assert is_legal(h["from"], h["state"])


# Hypothesis strategy: sequences of writes, mostly current-attempt so that legal paths are
# explored deeply, with stale and future attempts and old epochs mixed in.
writes = st.lists(
    st.builds(
        Write,
        to=st.sampled_from(list(TaskStatus)),
        attempt_offset=st.sampled_from([0, 0, 0, -1, 1]),
        epoch=st.integers(min_value=0, max_value=4),
        fenced=st.booleans(),
    ),
    max_size=25,
)
