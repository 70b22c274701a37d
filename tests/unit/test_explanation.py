"""`tasklab explain`'s sentences, built from snapshots: one test per sentence kind."""

from __future__ import annotations

from common.domain.explanation import Liveness, QueuePlace, TaskSnapshot, explain
from common.domain.task import Task, TaskType
from common.domain.transitions import TaskStatus as S

NOW = 10_000.0


def task(**fields) -> Task:
    base = {
        "task_id": "t-1",
        "task_name": "n",
        "task_type": TaskType.SHELL,
        "payload": "true",
        "created_at": NOW - 100,
        "updated_at": NOW - 20,
    }
    return Task(**{**base, **fields})


def said(snap: TaskSnapshot, kind: str) -> list[str]:
    return [s.text for s in explain(snap) if s.kind == kind]


def test_a_pending_task_says_where_it_is_in_the_queue():
    snap = TaskSnapshot(task(), [], NOW, places=[QueuePlace("pending", 3, 7)])
    assert said(snap, "state")[0].startswith("It is PENDING since")
    assert said(snap, "queue") == [
        "It is 3rd of 7 in queue:pending: 2 message(s) will be taken before it."
    ]


def test_a_retry_in_backoff_says_when_it_goes_back_on_the_queue():
    snap = TaskSnapshot(
        task(attempt=2), [], NOW, places=[QueuePlace("delayed", 1, 1, due_at=NOW + 12)]
    )
    assert "a retry waiting out its backoff" in said(snap, "state")[0]
    assert said(snap, "queue")[0].endswith("(in 12s).")


def test_a_waiting_task_on_no_queue_is_called_stuck():
    snap = TaskSnapshot(task(status=S.SCHEDULED, epoch=7), [], NOW)
    assert "the leading scheduler (epoch 7) took it" in said(snap, "state")[0]
    assert "on no queue while it is SCHEDULED" in said(snap, "queue")[0]


def test_the_timeline_has_one_sentence_per_transition_with_its_reason():
    history = [
        {"state": "PENDING", "at": NOW - 50, "actor": "client", "attempt": 1, "epoch": 0},
        {
            "state": "PENDING",
            "from": "RUNNING",
            "at": NOW - 20,
            "actor": "scheduler:s1",
            "attempt": 2,
            "epoch": 9,
            "reason": "agent a1 lost",
        },
    ]
    lines = said(TaskSnapshot(task(attempt=2), history, NOW), "timeline")
    assert len(lines) == 2
    assert lines[1].endswith(
        "became PENDING from RUNNING (attempt 2, epoch 9) by scheduler:s1: agent a1 lost."
    )


def test_a_running_task_says_whether_its_agent_is_live_and_how_long_it_has_left():
    t = task(status=S.RUNNING, agent_id="a1", execution_timeout=60)
    live = TaskSnapshot(t, [], NOW, owner=Liveness("a1", 4.2, True))
    assert said(live, "state")[0].endswith("40s before its 60s timeout.")
    assert said(live, "owner") == [
        "Its agent a1 is live: registered in ZooKeeper (/live-agents/a1), heartbeat key "
        "expires in 4.2s."
    ]
    dead = TaskSnapshot(t, [], NOW, owner=Liveness("a1", None, False))
    assert "is not live" in said(dead, "owner")[0]
    assert "leader's failover gives it back" in said(dead, "owner")[0]
    stage1 = TaskSnapshot(t, [], NOW, owner=Liveness("a1", None, None))
    assert "a reaper gives it back" in said(stage1, "owner")[0]


def test_the_epoch_sentence_compares_the_task_with_the_fence():
    assert "no fence:scheduler" in said(TaskSnapshot(task(), [], NOW), "epoch")[0]
    older = TaskSnapshot(task(epoch=3), [], NOW, fence=5)
    assert "must carry epoch 5 or more" in said(older, "epoch")[0]
    current = TaskSnapshot(task(epoch=5), [], NOW, fence=5)
    assert "the current fence:scheduler" in said(current, "epoch")[0]


def test_retries_left_and_attempts_lost_are_counted():
    snap = TaskSnapshot(task(retry_count=3), [], NOW, retries_used=1, lost_attempts=2)
    assert said(snap, "retries") == ["It may retry 3 time(s) automatically; 1 used, 2 left."]
    assert said(snap, "lost")[0].startswith("2 of its attempts were lost with their agent")
    assert said(TaskSnapshot(task(), [], NOW), "lost") == []


def test_refused_writes_are_said_to_be_known_only_for_the_whole_platform():
    snap = TaskSnapshot(task(), [], NOW, rejections={"stale_epoch": 2, "illegal": 0})
    text = said(snap, "fenced")[0]
    assert "stale_epoch 2" in text and "cannot be known" in text


def test_a_child_names_its_parent_and_a_parent_counts_its_children():
    child = task(parent_id="p-1", role="shard", shard_index=1, shard_total=4)
    snap = TaskSnapshot(child, [], NOW, parent_status="RUNNING")
    assert said(snap, "parent") == ["It is shard 2 of 4 of composite task p-1, which is RUNNING."]
    parent = TaskSnapshot(task(), [], NOW, children={"SUCCESS": 2, "RUNNING": 1})
    assert said(parent, "children") == ["Its 3 children: 1 RUNNING, 2 SUCCESS (2 of 3 finished)."]


def test_the_checker_sentence_tells_no_checker_from_nothing_found_from_a_finding():
    assert "No guarantee checker has run" in said(TaskSnapshot(task(), [], NOW), "checker")[0]
    clean = TaskSnapshot(task(), [], NOW, checker_last_pass=NOW - 3)
    assert said(clean, "checker") == [
        "The checker's last pass (3s ago) found nothing wrong with it."
    ]
    found = TaskSnapshot(
        task(),
        [],
        NOW,
        findings=[{"check": "stuck_pending", "detail": "PENDING for 700s"}],
        checker_last_pass=NOW - 3,
    )
    assert "stuck_pending: PENDING for 700s" in said(found, "checker")[0]


def test_a_final_task_says_how_it_ended():
    snap = TaskSnapshot(task(status=S.FAILED, exit_code=3, error="exit 3", attempt=2), [], NOW)
    text = said(snap, "state")[0]
    assert text.startswith("It is FAILED, final") and "exit code 3" in text


def test_a_composite_says_who_starts_it_and_that_no_scheduler_has_led_yet():
    pending = TaskSnapshot(task(task_type=TaskType.COMPOSITE, payload="{}"), [], NOW)
    state = said(pending, "state")[0]
    assert "the leading scheduler's coordinator starts (stage 2 on)" in state
    assert "No scheduler has led on this Redis yet" in state
    # A composite sits on no queue by design: that is not called stuck.
    assert said(pending, "queue") == []
    led = TaskSnapshot(task(task_type=TaskType.COMPOSITE, payload="{}"), [], NOW, fence=4)
    assert "No scheduler has led" not in said(led, "state")[0]
    running = TaskSnapshot(
        task(task_type=TaskType.COMPOSITE, payload="{}", status=S.RUNNING, epoch=4),
        [],
        NOW,
        fence=4,
        children={"SUCCESS": 1, "WAITING": 2},
    )
    assert "coordinated by the leading scheduler (epoch 4)" in said(running, "state")[0]
    assert said(running, "children") == ["Its 3 children: 1 SUCCESS, 2 WAITING (1 of 3 finished)."]
