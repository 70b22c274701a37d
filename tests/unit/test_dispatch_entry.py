"""The typed dispatch entry: written and read in one place."""

from __future__ import annotations

import json

import pytest

from common.domain.dispatch import DispatchEntry, dispatch_stamp
from common.domain.task import Task, TaskSpec, TaskType, TaskValidationError


def task() -> Task:
    return Task.new(TaskSpec(task_type=TaskType.SHELL, payload="echo hi", retry_count=2))


def test_an_entry_round_trips_through_its_json():
    entry = DispatchEntry(task(), attempt=3, epoch=42)
    back = DispatchEntry.parse(entry.to_json())
    assert (back.task_id, back.attempt, back.epoch) == (entry.task_id, 3, 42)
    assert back.task.payload == "echo hi" and back.task.retry_count == 2


def test_an_entry_is_the_queue_message_plus_its_stamp():
    t = task()
    data = json.loads(DispatchEntry(t, 1, 7).to_json())
    assert data == {**json.loads(t.to_message()), "attempt": 1, "epoch": 7}


@pytest.mark.parametrize(
    "extra",
    [
        {},  # a plain submission
        {"attempt": 2},  # a hand-pushed message with an attempt of its own, no epoch
        {"attempt": True, "epoch": 0},  # booleans are not numbers here
        {"attempt": "2", "epoch": 1},
        {"attempt": 0, "epoch": 1},
        {"attempt": 1, "epoch": -1},
        {"attempt": 1.5, "epoch": 1},
    ],
)
def test_only_a_whole_well_typed_stamp_makes_a_message_a_dispatch(extra):
    message = {"taskType": "SHELL", "payload": "echo hi", **extra}
    assert dispatch_stamp(json.dumps(message)) is None


@pytest.mark.parametrize("raw", [b"\xff\xfe", "[1, 2]", "not json", "[" * 100_000])
def test_garbage_is_never_a_dispatch(raw):
    assert dispatch_stamp(raw) is None


def test_parsing_a_message_without_a_stamp_says_what_is_wrong():
    with pytest.raises(TaskValidationError, match="not a dispatch entry"):
        DispatchEntry.parse(task().to_message())
