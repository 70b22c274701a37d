"""`/api/v1/dead-letters`: the messages the platform could not run, and their requeue.

The dead-letter list lives in Redis and no TaskService call reads it, so these routes use the
DeadLetterBox port (common.ports.dead_letters) on the API's own Redis client. A requeue puts
the message back on queue:pending (an Admin's decision: the message runs as if pushed again)
and is idempotent: repeated, it answers ALREADY_REQUEUED and pushes nothing.

From stage 3 the event bus has a dead-letter topic too: `?box=bus` lists it, read only,
through the BusDeadLetters port (common.ports.bus_dead_letters).
"""

from __future__ import annotations

from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from redis.exceptions import RedisError

from common.api import catalog, dto
from common.api.links import require
from common.domain.dead_letter import DeadLetter, Requeue, RequeueResult
from common.ports.bus_dead_letters import BusDeadLetter, BusDeadLetters, BusUnavailable
from common.security import Principal, Role

router = APIRouter(prefix="/api/v1", tags=["dead letters"])

EntryId = Annotated[str, Path(alias="entryId", pattern="^[0-9a-f]{16}$")]


def _rfc3339(at: float | None) -> str | None:
    if at is None:
        return None
    moment = datetime.fromtimestamp(at, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def dead_letter_view(entry: DeadLetter) -> dto.DeadLetterView:
    return dto.DeadLetterView(
        entry_id=entry.entry_id,
        message=entry.message,
        reason=entry.reason,
        actor=entry.actor,
        at=_rfc3339(entry.at),
        source=entry.source,
    )


def bus_dead_letter_view(entry: BusDeadLetter) -> dto.DeadLetterView:
    return dto.DeadLetterView(
        entry_id=entry.entry_id,
        message=entry.message,
        reason=entry.reason,
        actor=entry.group,
        at=_rfc3339(entry.at),
        source=entry.original_topic,
        box=dto.DeadLetterBoxName.bus,
        topic=entry.original_topic or None,
        partition=entry.original_partition,
        offset=entry.original_offset,
        key=entry.key,
    )


@contextmanager
def _redis_answers():
    # Redis away is a backing service down (503, try again), as the contract has it, not a
    # bug: the list and the requeue are one round trip or one script, so nothing half-done.
    try:
        yield
    except RedisError as exc:
        raise catalog.unavailable(f"Redis: {exc}", retry_after=2) from None


def list_dead_letters(box, limit: int) -> dto.DeadLetterList:
    with _redis_answers():
        entries, total = box.list(limit)
    return dto.DeadLetterList(items=[dead_letter_view(e) for e in entries], total=total)


def list_bus_dead_letters(reader: BusDeadLetters, limit: int) -> dto.DeadLetterList:
    """The dead-letter topic's newest entries; a note instead when no bus is configured, a
    problem 503 when the bus does not answer (a backing service down, as for Redis)."""
    bus = dto.DeadLetterBoxName.bus
    if not reader.configured:
        note = getattr(reader, "why", "") or "no event bus is configured"
        return dto.DeadLetterList(items=[], total=0, box=bus, note=note)
    try:
        entries, total = reader.list(limit)
    except BusUnavailable as exc:
        raise catalog.unavailable(f"Kafka: {exc}", retry_after=2) from None
    items = [bus_dead_letter_view(e) for e in entries]
    return dto.DeadLetterList(items=items, total=total, box=bus)


def requeue(box, entry_id: str) -> RequeueResult:
    """The requeue use case: a problem 404 when there is no such entry (nor was there one
    requeued lately), else what was done."""
    with _redis_answers():
        result = box.requeue(entry_id)
    if result.outcome == Requeue.NOT_FOUND:
        raise catalog.problem("not-found", f"no dead letter {entry_id}")
    return result


@router.get(
    "/dead-letters",
    response_model=dto.DeadLetterList,
    summary="Messages that could not be run, newest first, each with its reason",
    description="`box=redis` (the default): the Redis dead-letter list, whose entries an Admin "
    "may requeue. `box=bus` (stage 3 on): the event bus's dead-letter topic, read only, each "
    "entry with the topic, partition and offset it was refused at; with no bus configured the "
    "answer is empty with a `note` saying so, and 503 when the bus does not answer.",
    responses=dto.problem_responses(401, 403, 422, 429, 503),
)
def get_dead_letters(
    request: Request,
    _: Annotated[Principal, Depends(require(Role.TASK_READ))],
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    box: Annotated[
        dto.DeadLetterBoxName, Query(description="Which dead letters: the Redis list or the bus.")
    ] = dto.DeadLetterBoxName.redis,
) -> dto.DeadLetterList:
    backends = request.app.state.backends
    if box == dto.DeadLetterBoxName.bus:
        return list_bus_dead_letters(backends.bus_dead_letters, limit)
    return list_dead_letters(backends.dead_letters, limit)


@router.post(
    "/dead-letters/{entryId}/requeue",
    response_model=dto.RequeueAnswer,
    summary="Put a dead letter's message back on queue:pending (idempotent; Admin)",
    responses=dto.problem_responses(401, 403, 404, 422, 429, 503),
)
def requeue_dead_letter(
    entry_id: EntryId,
    request: Request,
    _: Annotated[Principal, Depends(require(Role.ADMIN))],
) -> dto.RequeueAnswer:
    result = requeue(request.app.state.backends.dead_letters, entry_id)
    return dto.RequeueAnswer(
        entry_id=result.entry_id, outcome=result.outcome.value, queue=result.queue
    )
