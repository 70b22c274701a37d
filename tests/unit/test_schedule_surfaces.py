"""The schedule document and view across the wire: protobuf and back, and one JSON shape for
the REST API and the CLI reading Redis."""

from __future__ import annotations

import pytest

from common.adapters.memory_schedule import InMemoryScheduleStore
from common.api.routes_schedules import schedule_view
from common.domain.schedule import Run, validate_schedule
from common.domain.task import TaskValidationError
from common.rpc import convert
from common.scheduling.schedules import create_schedule, preview, schedule_json

DOC = {
    "name": "nightly",
    "schedule": "30 2 * * 1-5",
    "timeZone": "Europe/Berlin",
    "concurrencyPolicy": "Replace",
    "startingDeadlineSeconds": 300,
    "successfulJobsHistoryLimit": 2,
    "failedJobsHistoryLimit": 0,
    "suspend": True,
    "task": {"taskType": "SHELL", "payload": "echo report", "executionTimeout": 600},
}
NOW = 1_800_000_000.0


def test_a_document_goes_through_protobuf_and_back_unchanged():
    back = convert.schedule_data(convert.schedule_spec(DOC))
    assert validate_schedule(back) == validate_schedule(DOC)


def test_a_value_protobuf_cannot_hold_is_named_by_its_path():
    with pytest.raises(TaskValidationError) as err:
        convert.schedule_spec({**DOC, "suspend": "yes", "task": {"executionTimeout": "ten"}})
    assert "suspend: must be true or false" in err.value.problems
    assert any(p.startswith("task.executionTimeout:") for p in err.value.problems)


def test_the_rest_view_and_the_cli_view_from_redis_are_the_same_json():
    store = InMemoryScheduleStore()
    state = create_schedule(store, validate_schedule(DOC), NOW)
    row = store.rows["nightly"]
    row.active["r2"] = NOW + 60
    row.succeeded["r1"] = NOW
    state = store.get("nightly")
    fires = preview(state.spec.schedule, state.spec.time_zone, NOW, 3)
    over_rest = schedule_view(convert.schedule(state, fires)).model_dump(by_alias=True, mode="json")
    assert over_rest == schedule_json(state, fires)
    assert over_rest["status"]["active"] == [
        {"taskId": "r2", "scheduledFor": "2027-01-15T08:01:00.000Z"}
    ]
    assert state.succeeded == (Run("r1", NOW),)
