"""What the archiver makes of a status event, and what the readers make of archived rows."""

from __future__ import annotations

from common.api.views import archived_detail
from common.archive.archiver import row_of
from common.messaging.schemas import StatusEvent
from common.ports.archive import ArchivedAttempt, ArchivedTask

TASK_ID = "6f1c1f2e-1b7e-4a8e-9d1e-0c2b3a4d5e6f"
HASH = {
    "taskId": TASK_ID,
    "taskName": "nightly",
    "taskType": "SHELL",
    "payload": "echo hi",
    "executionTimeout": "60",
    "retryCount": "1",
    "status": "RUNNING",
    "attempt": "2",
    "createdAt": "1700000000.25",
    "parentId": "",
}


def event(**fields) -> StatusEvent:
    base = {"task_id": TASK_ID, "attempt": 2, "epoch": 9, "agent_id": "agent-1"}
    return StatusEvent(**{**base, "status": "SUCCESS", "at": 1700000005.0, **fields})


def test_a_row_takes_the_outcome_from_the_event_and_the_description_from_redis():
    row = row_of(event(result="hi\n", exit_code=0), HASH)
    assert (row.task_id, row.attempt, row.status, row.epoch) == (TASK_ID, 2, "SUCCESS", 9)
    assert (row.result, row.exit_code, row.finished_at) == ("hi\n", 0, 1700000005.0)
    # The hash says RUNNING (the manager may not have applied it yet): the event decides.
    assert (row.task_type, row.task_name, row.created_at) == ("SHELL", "nightly", 1700000000.25)
    assert row.parent_id is None and row.task == HASH


def test_a_task_redis_no_longer_has_is_archived_with_what_the_event_carries():
    row = row_of(event(status="FAILED", error="exit 3", exit_code=3), None)
    assert (row.status, row.error, row.exit_code) == ("FAILED", "exit 3", 3)
    assert (row.task_type, row.task_name, row.created_at, row.task) == (None, None, None, {})


def attempt(n: int, status: str, doc: dict, **fields) -> ArchivedAttempt:
    return ArchivedAttempt(
        task_id=TASK_ID,
        attempt=n,
        status=status,
        agent_id=f"agent-{n}",
        epoch=9,
        finished_at=1700000000.0 + n,
        archived_at=1700000010.0,
        task=doc,
        **fields,
    )


def test_an_archived_task_ends_as_its_last_attempt_with_one_timeline_entry_per_attempt():
    found = ArchivedTask(
        TASK_ID,
        (
            attempt(1, "FAILED", HASH, error="boom", exit_code=1),
            attempt(2, "SUCCESS", HASH, result="hi\n", exit_code=0),
        ),
    )
    task = found.task()
    assert task is not None
    assert (task.status.value, task.attempt, task.agent_id) == ("SUCCESS", 2, "agent-2")
    assert (task.result, task.error, task.exit_code) == ("hi\n", None, 0)
    assert [(e["state"], e["attempt"]) for e in found.timeline()] == [
        ("FAILED", 1),
        ("SUCCESS", 2),
    ]
    view = archived_detail(found)
    assert view is not None and view.archived is True
    assert (view.status.value, view.attempt, view.logs) == ("SUCCESS", 2, [])
    assert view.updated_at == "2023-11-14T22:13:22.000Z"


def test_rows_archived_without_the_task_description_show_no_task():
    found = ArchivedTask(TASK_ID, (attempt(1, "SUCCESS", {}),))
    assert found.task() is None
    assert archived_detail(found) is None
