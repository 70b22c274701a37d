"""The manager on its own: poisoned messages, redeliveries, and a kill -9 in the middle.

Only the manager runs in the first tests; the test plays the agents, publishing to the topics
exactly what an agent would (and what no agent would), and reads Redis and the dead-letter
topic for the outcome.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from common import keys
from common.domain.transitions import TaskStatus
from common.messaging import dead_letter
from common.messaging.schemas import Heartbeat, LogLine, StatusEvent
from common.messaging.topics import DEAD_LETTER, HEARTBEAT, LOGS, STATUS
from common.testing import eventually


@pytest.fixture
def manager(role, probe):
    """A running manager that has joined its group and reads all three topics."""
    proc = role("manager", "manager-1")

    def heard() -> bool:
        # A fresh heartbeat each time: the manager ignores one older than its timeout.
        beat = Heartbeat(agent_id="warm-up", load=0, capacity=1, seq=1)
        probe.produce(HEARTBEAT, "warm-up", beat.encode())
        return bool(probe.redis.exists(keys.heartbeat("warm-up")))

    eventually(heard, 30, interval=0.5, message="manager reading")
    return proc


def valid_message(topic: str, task_id: str, epoch: int) -> tuple[str, bytes]:
    """(key, value) of a message the manager can apply to a task RUNNING on agent-x."""
    if topic == STATUS:
        event = StatusEvent(
            task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status="SUCCESS"
        )
        return task_id, event.encode()
    if topic == LOGS:
        return task_id, LogLine(task_id=task_id, attempt=1, seq=1, line="hello").encode()
    return "agent-x", Heartbeat(agent_id="agent-x", load=1, capacity=2, seq=1).encode()


def applied(probe, topic: str, task_id: str) -> bool:
    if topic == STATUS:
        return probe.tasks.get(task_id).status == TaskStatus.SUCCESS
    if topic == LOGS:
        return probe.logs(task_id) == ["hello"]
    return bool(probe.redis.exists(keys.heartbeat("agent-x")))


@pytest.mark.parametrize("topic", [STATUS, LOGS, HEARTBEAT])
def test_a_poisoned_message_is_dead_lettered_with_its_origin_and_the_next_is_applied_in_a_second(
    manager, probe, topic
):
    # Given a task RUNNING on agent-x, and a manager reading
    task_id, epoch = probe.running_task("agent-x")
    key, value = valid_message(topic, task_id, epoch)

    # When a message that is not JSON lands on the topic, followed by a valid one (same key,
    # so the same partition: the valid one is stuck behind the poison unless it is moved aside)
    poison = probe.produce(topic, key, b"{this is not json")
    probe.produce(topic, key, value)
    sent = time.monotonic()

    # Then the valid message is applied within a second
    eventually(lambda: applied(probe, topic, task_id), 1.0, message=f"valid {topic} applied")
    took = time.monotonic() - sent
    # and the poison is in the dead-letter topic, unchanged, saying where it came from and why
    [letter] = probe.read(DEAD_LETTER, lambda got: len(got) >= 1)
    headers = probe.headers(letter)
    assert letter.value() == b"{this is not json" and letter.key() == key.encode()
    assert headers[dead_letter.ORIGINAL_TOPIC] == probe.bus.topic(topic)
    assert headers[dead_letter.ORIGINAL_PARTITION] == str(poison.partition())
    assert headers[dead_letter.ORIGINAL_OFFSET] == str(poison.offset())
    assert "not JSON" in headers[dead_letter.ERROR]
    assert headers[dead_letter.CONSUMER_GROUP] == probe.bus.group("tasklab-manager")
    print(f"{topic}: next valid message applied {took * 1000:.0f} ms after it was published")


def test_a_message_that_parses_but_cannot_be_applied_is_dead_lettered_too(manager, probe):
    # Given a task that is still PENDING (no agent ever took it)
    task, _ = probe.tasks.submit({"taskType": "SHELL", "payload": "true"})

    # When a SUCCESS for it arrives, and one for a task that does not exist
    for task_id in (task.task_id, "00000000-0000-4000-8000-000000000000"):
        event = StatusEvent(
            task_id=task_id, attempt=1, epoch=0, agent_id="agent-x", status="SUCCESS"
        )
        probe.produce(STATUS, task_id, event.encode())

    # Then both are dead-lettered with the reason, and the task is untouched
    letters = probe.read(DEAD_LETTER, lambda got: len(got) >= 2)
    errors = {m.key().decode(): probe.headers(m)[dead_letter.ERROR] for m in letters}
    assert errors == {
        task.task_id: "cannot apply SUCCESS to a PENDING task",
        "00000000-0000-4000-8000-000000000000": "no task 00000000-0000-4000-8000-000000000000",
    }
    assert probe.tasks.get(task.task_id).status == TaskStatus.PENDING


def test_a_redelivered_status_or_log_line_changes_nothing(manager, probe):
    # Given a task RUNNING on agent-x
    task_id, epoch = probe.running_task("agent-x")
    lines = [LogLine(task_id=task_id, attempt=1, seq=n, line=f"line {n}") for n in (1, 2, 3)]
    done = StatusEvent(
        task_id=task_id,
        attempt=1,
        epoch=epoch,
        agent_id="agent-x",
        status="SUCCESS",
        result="ok\n",
        exit_code=0,
        log_lines=3,
    )

    # When every line and the final status arrive twice (as after a crash before a commit)
    for message in (*lines, *lines):
        probe.produce(LOGS, task_id, message.encode())
    probe.produce(STATUS, task_id, done.encode())
    probe.produce(STATUS, task_id, done.encode())

    # Then the task finished once, with each line once, in order
    eventually(lambda: probe.event_stats()["status_duplicate"] == 1, 10, message="both read")
    assert probe.logs(task_id) == ["line 1", "line 2", "line 3"]
    states = [h["state"] for h in probe.history(task_id)]
    assert states.count("SUCCESS") == 1 and probe.tasks.get(task_id).result == "ok\n"
    stats = probe.event_stats()
    assert (stats["log_appended"], stats["log_duplicate"], stats["status_applied"]) == (3, 3, 1)
    # and the agent's ledger entry is gone: nothing is left for a failover to re-run
    assert probe.redis.llen(keys.processing("agent-x")) == 0


def test_a_final_status_whose_running_never_arrived_is_applied_after_an_implied_running(
    manager, probe
):
    # Given a task DISPATCHED to agent-x and taken up by it, whose RUNNING event was lost
    task_id, epoch = probe.running_task("agent-x", status=TaskStatus.DISPATCHED)
    done = StatusEvent(
        task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status="SUCCESS"
    )
    running = StatusEvent(
        task_id=task_id, attempt=1, epoch=epoch, agent_id="agent-x", status="RUNNING"
    )

    # When its SUCCESS arrives, and the RUNNING only after it
    probe.produce(STATUS, task_id, done.encode())
    probe.produce(STATUS, task_id, running.encode())

    # Then the task went DISPATCHED -> RUNNING -> SUCCESS once, and the late RUNNING is a
    # duplicate, not a dead letter
    eventually(lambda: probe.event_stats()["status_duplicate"] == 1, 10, message="both read")
    states = [h["state"] for h in probe.history(task_id)]
    assert states[-3:] == ["DISPATCHED", "RUNNING", "SUCCESS"]
    assert probe.event_stats()["status_running_implied"] == 1
    assert probe.redis.llen(keys.processing("agent-x")) == 0


def test_a_final_status_waits_for_its_log_lines_so_follow_never_stops_early(manager, probe):
    # Given a task RUNNING on agent-x, whose final status says it printed two lines
    task_id, epoch = probe.running_task("agent-x")
    done = StatusEvent(
        task_id=task_id,
        attempt=1,
        epoch=epoch,
        agent_id="agent-x",
        status="SUCCESS",
        log_lines=2,
    )

    # When the status arrives before the lines (they travel on another topic)
    probe.produce(STATUS, task_id, done.encode())
    probe.produce(LOGS, task_id, LogLine(task_id=task_id, attempt=1, seq=1, line="a").encode())
    assert probe.tasks.get(task_id).status == TaskStatus.RUNNING
    probe.produce(LOGS, task_id, LogLine(task_id=task_id, attempt=1, seq=2, line="b").encode())

    # Then the task is SUCCESS only once both lines are in
    eventually(lambda: probe.tasks.get(task_id).status == TaskStatus.SUCCESS, 5, message="done")
    assert probe.logs(task_id) == ["a", "b"]


def test_a_poisoned_message_published_with_the_cli_is_listed_by_tasklab_bus_dead_letters(
    manager, probe, stage3_env
):
    # The runbook's "inject a poisoned message" experiment, as a user types it.
    def tasklab(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "common.cli.main", *args],
            env={**os.environ, **stage3_env, "TASKLAB_ENV": "test"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # When a user publishes a line that is not JSON to task-logs-topic
    sent = tasklab("bus", "publish", "task-logs-topic", "not json", "--key", "demo")
    assert sent.startswith(f"delivered to {probe.bus.topic(LOGS)} [")

    # Then `tasklab bus dead-letters` shows it with where it came from and why
    def listed() -> str:
        out = tasklab("bus", "dead-letters")
        return "key=demo not json" in out and out

    out = eventually(listed, 15, interval=0.5, message="dead letter listed")
    assert f"x-original-topic: {probe.bus.topic(LOGS)}" in out
    assert "x-error: not JSON" in out
    assert "x-consumer-group: " + probe.bus.group("tasklab-manager") in out
