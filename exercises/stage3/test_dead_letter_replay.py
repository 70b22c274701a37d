"""Exercise 3.1, replay one task's dead letters.

A dead letter keeps the original key and value unchanged, and says where it came from in
`x-` headers (common/messaging/dead_letter.py). Once the cause is fixed, an operator wants to
publish one task's dead letters again, as they were, to the topics they came from. Write the
plan for that, a pure function in common/messaging/dead_letter.py:

    replay_plan(letters, task_id) -> list[(topic, key, value, headers)]

`letters` are messages read from the dead-letter topic (`topic()`, `key()`, `value()`,
`headers()` as confluent-kafka gives them). Keep only the task's letters (key = taskId), in
the order given; the topic is the original one; the headers are the producer's own (the `x-`
ones describe the failure, not the message). A letter that does not say where it came from
cannot be replayed: leave it out. Then wire it into `tasklab bus` if you like. No services
(`make exercise-stage3`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.messaging import dead_letter
from exercises.support import attribute

TASK = "5a0c6f43-86a3-4c1e-9d7e-4d1b2f9a0c11"
OTHER = "0b7d0a57-3a14-4c56-8f0e-07c3f5a9e2d4"


@dataclass
class Letter:
    """What a consumer of the dead-letter topic is handed (the methods of a Kafka Message)."""

    key_: bytes | None
    value_: bytes
    headers_: list[tuple[str, bytes]] = field(default_factory=list)

    def topic(self) -> str:
        return "tasklab-dead-letter-topic"

    def key(self) -> bytes | None:
        return self.key_

    def value(self) -> bytes:
        return self.value_

    def headers(self) -> list[tuple[str, bytes]]:
        return self.headers_


def letter(key: str | None, value: bytes, origin: str | None, *own: tuple[str, bytes]) -> Letter:
    headers = [] if origin is None else [(dead_letter.ORIGINAL_TOPIC, origin.encode())]
    headers += [(dead_letter.ERROR, b"no task"), (dead_letter.FAILED_AT, b"1.0"), *own]
    return Letter(None if key is None else key.encode(), value, headers)


def replay_plan():
    return attribute(
        "3.1",
        dead_letter,
        "replay_plan",
        "write replay_plan(letters, task_id) in common/messaging/dead_letter.py",
    )


def test_replay_publishes_the_tasks_letters_to_their_original_topics_unchanged():
    plan = replay_plan()
    letters = [
        letter(TASK, b'{"status":"SUCCESS"}', "task-status-update-topic"),
        letter(OTHER, b'{"status":"FAILED"}', "task-status-update-topic"),
        letter(TASK, b'{"line":"hi"}', "task-logs-topic", ("agentId", b"agent-1")),
    ]
    assert plan(letters, TASK) == [
        ("task-status-update-topic", TASK.encode(), b'{"status":"SUCCESS"}', []),
        ("task-logs-topic", TASK.encode(), b'{"line":"hi"}', [("agentId", b"agent-1")]),
    ]


def test_a_letter_that_does_not_say_where_it_came_from_is_not_replayed():
    plan = replay_plan()
    letters = [letter(TASK, b"x", None), letter(None, b"y", "task-status-update-topic")]
    assert plan(letters, TASK) == []
