"""`make demo`'s cron schedule: made once, kept by a second demo on the same store."""

from __future__ import annotations

from common.adapters.memory_schedule import InMemoryScheduleStore
from common.adapters.memory_store import InMemoryTaskStore
from common.demo import DEMO_SCHEDULE, create_demo_schedule


def test_the_demo_schedule_is_created_once_and_a_second_demo_keeps_it(capsys):
    store = InMemoryScheduleStore(InMemoryTaskStore())
    create_demo_schedule(store)
    first = store.get(DEMO_SCHEDULE["name"])
    assert first is not None and first.spec.schedule == "* * * * *"
    create_demo_schedule(store)
    assert [s.uid for s in store.list()] == [first.uid], "the same schedule, not a new one"
    out = capsys.readouterr().out
    assert "created cron schedule 'demo-every-minute'" in out
    assert "exists already: kept" in out
    assert out.count("next fire times: ") == 2
