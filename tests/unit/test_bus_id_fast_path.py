"""A bus message's task id in the platform's own spelling is taken without uuid.UUID's parse and
re-format; every other spelling goes the long way. Either way the answer is the one the long
way alone gives: the same id back, or the same refusal.
"""

from __future__ import annotations

import random
import uuid

import pytest

from common.messaging.schemas import (
    DispatchMessage,
    MalformedMessage,
    StatusEvent,
    _canonical_uuid,
    decode,
)


def long_way(v: str) -> str:
    """The check as it was before the fast path, kept here as the oracle."""
    canonical = str(uuid.UUID(v))
    if canonical != v.lower():
        raise ValueError("must be a UUID in its canonical form")
    return canonical


def outcome(check, v: str) -> tuple[str, str]:
    try:
        return "ok", check(v)
    except ValueError as exc:
        return "refused", str(exc)


def spellings() -> list[str]:
    rng = random.Random(20261130)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(200)]
    ids += [str(uuid.uuid4()) for _ in range(50)]
    one = ids[0]
    return [
        *ids,
        one.upper(),
        one[:9] + one[9:].upper(),
        "{" + one + "}",
        "urn:uuid:" + one,
        one.replace("-", ""),
        one + "\n",
        " " + one,
        one[:-1],
        one + "0",
        one[:8] + "_" + one[9:],
        one.replace("a", "g"),
        one.replace(one[0], "٣"),  # an Arabic-Indic digit: \\d would take it, hex does not
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "",
    ]


@pytest.mark.parametrize("v", spellings())
def test_an_id_is_taken_or_refused_exactly_as_the_long_way_does(v):
    assert outcome(_canonical_uuid, v) == outcome(long_way, v)


def test_an_upper_case_id_on_the_bus_is_still_read_in_lower_case():
    task_id = str(uuid.uuid4())
    raw = StatusEvent(task_id=task_id, attempt=1, epoch=0, agent_id="a", status="RUNNING").encode()
    event = decode(StatusEvent, raw.replace(task_id.encode(), task_id.upper().encode()))
    assert event.task_id == task_id


def test_an_id_in_braces_is_still_dead_lettered_with_its_reason():
    task_id = str(uuid.uuid4())
    raw = (
        b'{"v":1,"taskId":"{' + task_id.encode() + b'}","attempt":1,"epoch":0,'
        b'"agentId":"a","taskType":"SHELL","payload":"true","executionTimeout":5}'
    )
    with pytest.raises(MalformedMessage, match="taskId: .*36 characters"):
        decode(DispatchMessage, raw)
    with pytest.raises(MalformedMessage, match="taskId: must be a UUID in its canonical form"):
        decode(
            DispatchMessage,
            raw.replace(b"{" + task_id.encode() + b"}", task_id.replace("-", "").encode()),
        )
