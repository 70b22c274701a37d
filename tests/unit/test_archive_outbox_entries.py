"""What the archiver makes of an outbox entry: the fields archive_outbox.lua writes, decoded
into a row, and the reason an entry that cannot be a row is dead-lettered with."""

from __future__ import annotations

import pytest

from common.archive.outbox import MalformedEntry, OutboxEntry, decode_entry, row_of_entry

TASK_ID = "6f1c1f2e-1b7e-4a8e-9d1e-0c2b3a4d5e6f"
# As the Lua side writes them: the task hash's names, every value a string.
LUA_FIELDS = {
    "taskId": TASK_ID,
    "actor": "client",
    "source": "cancel",
    "status": "CANCELLED",
    "attempt": "2",
    "epoch": "7",
    "finishedAt": "1700000005.5",
    "updatedAt": "1700000005.5",
    "taskType": "SHELL",
    "taskName": "nightly",
    "createdAt": "1700000000.25",
    "error": "cancel requested",
}


def test_an_entry_as_the_lua_side_writes_it_decodes_into_its_outcome_and_description():
    entry = decode_entry({k.encode(): v.encode() for k, v in LUA_FIELDS.items()})
    assert (entry.task_id, entry.attempt, entry.status, entry.epoch) == (TASK_ID, 2, "CANCELLED", 7)
    assert (entry.at, entry.actor, entry.source) == (1700000005.5, "client", "cancel")
    assert (entry.error, entry.result, entry.agent_id) == ("cancel requested", None, "")
    described = (entry.task_type, entry.task_name, entry.created_at, entry.parent_id)
    assert described == ("SHELL", "nightly", 1700000000.25, None)


def test_encoding_an_entry_and_decoding_it_again_gives_the_same_entry():
    entry = OutboxEntry(
        task_id=TASK_ID,
        attempt=1,
        status="SKIPPED",
        at=1700000009.125,
        actor="coordinator:scheduler-1",
        source="composite",
        epoch=12,
        agent_id="agent-3",
        error="its trigger rule cannot hold",
        result=None,
        task_type="SHELL",
        task_name="shard 2",
        parent_id="parent-1",
        created_at=1700000000.0,
    )
    assert decode_entry(entry.to_fields()) == entry
    assert "result" not in entry.to_fields()


def test_a_task_redis_no_longer_has_is_archived_whole_from_what_the_entry_carries():
    entry = decode_entry(LUA_FIELDS)
    gone = row_of_entry(entry, None)
    assert (gone.task_id, gone.attempt, gone.status, gone.finished_at) == (
        TASK_ID,
        2,
        "CANCELLED",
        1700000005.5,
    )
    assert (gone.task_type, gone.task_name, gone.created_at) == ("SHELL", "nightly", 1700000000.25)
    assert gone.task == {} and gone.agent_id == "" and gone.exit_code is None
    # With the hash still in Redis, it is the row's document; the outcome stays the entry's.
    kept = row_of_entry(entry, {"taskId": TASK_ID, "status": "CANCELLED", "attempt": "2"})
    assert kept.task["attempt"] == "2" and kept.status == "CANCELLED"


def test_an_entry_without_finished_at_takes_its_time_from_updated_at():
    fields = {k: v for k, v in LUA_FIELDS.items() if k != "finishedAt"}
    assert decode_entry({**fields, "updatedAt": "1700000006"}).at == 1700000006.0


def test_a_description_field_that_is_not_a_number_is_left_out_not_refused():
    assert decode_entry({**LUA_FIELDS, "createdAt": "yesterday"}).created_at is None


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"taskId": ""}, "no taskId"),
        ({"status": "RUNNING"}, "status 'RUNNING' is not a final state"),
        ({"status": ""}, "status '' is not a final state"),
        ({"attempt": ""}, "no attempt"),
        ({"attempt": "two"}, "attempt 'two' is not a number"),
        ({"attempt": "0"}, "attempt 0 is not positive"),
        ({"finishedAt": "", "updatedAt": ""}, "no finishedAt nor updatedAt"),
        ({"finishedAt": "nan"}, "finishedAt 'nan' is not a finite number"),
        ({"epoch": "x"}, "epoch 'x' is not a number"),
    ],
)
def test_an_entry_that_cannot_be_a_row_is_refused_with_its_reason(change, reason):
    with pytest.raises(MalformedEntry) as refused:
        decode_entry({**LUA_FIELDS, **change})
    assert str(refused.value) == reason


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"taskId": b"6f1c\xff"}, "field taskId is not UTF-8 (byte 4: invalid start byte)"),
        (
            {"error": b"bad \xc3 byte"},
            "field error is not UTF-8 (byte 4: invalid continuation byte)",
        ),
        (
            {b"err\xffor": "x"},
            "field name err\\xffor is not UTF-8 (byte 3: invalid start byte)",
        ),
    ],
)
def test_bytes_that_are_not_utf8_are_refused_naming_the_field_not_replaced(change, reason):
    # Replacement characters would archive a row for a task id nobody made (or an error
    # nobody wrote): the entry is refused, to be dead-lettered with this reason.
    raw = {k.encode(): v.encode() for k, v in LUA_FIELDS.items()}
    raw |= {k if isinstance(k, bytes) else k.encode(): v for k, v in change.items()}
    with pytest.raises(MalformedEntry) as refused:
        decode_entry(raw)
    assert str(refused.value) == reason
