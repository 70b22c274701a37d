"""Idempotency keys: what "the same request" means, so one key can only ever name one task.

A client that did not hear the answer to a submit sends it again with the same `requestId`
(or `Idempotency-Key`): it must get the task the first call created, not a second one. The
same key with a *different* body is a client bug (a key reused for another task); answering
it with the first task would silently drop the second, so it is refused instead
(`IdempotencyConflict`: 409 on REST, ALREADY_EXISTS on gRPC).

"The same body" is decided on the normalised spec, not on the bytes sent: the spec after
validation and defaults (`taskType` upper-cased, `executionTimeout` 60 and `retryCount` 0 when
absent, `taskName` derived from the payload when empty), so two bodies that would create the
same task are the same request. The request id itself is not part of it (it is the key), and
the payload is compared exactly: whitespace is part of a shell command.

The fingerprint is stored with the key, in the same Lua script that creates the task
(submit.lua), so two concurrent submits with one key cannot both pass the check.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from common.domain.task import TaskSpec

if TYPE_CHECKING:
    from common.domain.composite import CompositeSpec

# Bumped if the normalisation ever changes, so an old fingerprint never matches a new one by
# accident (it would then conflict, the safe side, rather than return the wrong task).
FINGERPRINT_VERSION = "v1"


class IdempotencyConflict(ValueError):
    """The request id already names a task created from a different request."""

    def __init__(self, request_id: str, task_id: str) -> None:
        super().__init__(
            f"requestId {request_id!r} was already used for task {task_id} with a different "
            f"request; use a new requestId for a different task"
        )
        self.request_id = request_id
        self.task_id = task_id


def normalised(spec: TaskSpec) -> dict:
    """The fields that decide what task a submit creates, as the store would write them."""
    spec = spec.with_default_name()
    return {
        "taskName": spec.task_name,
        "taskType": spec.task_type.value,
        "payload": spec.payload,
        "executionTimeout": spec.execution_timeout,
        "retryCount": spec.retry_count,
    }


def _digest(doc: dict) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{FINGERPRINT_VERSION}:" + hashlib.sha256(text.encode()).hexdigest()


def spec_fingerprint(spec: TaskSpec) -> str:
    """The fingerprint of a submit: equal for bodies that would create the same task."""
    return _digest({"submit": normalised(spec)})


def retry_fingerprint(task_id: str) -> str:
    """The fingerprint of a retry: the same key may only ever retry the same task.

    A retry's body is just the task it retries, so that is what is compared; it can never
    equal a submit's fingerprint, so one key cannot be both a submit and a retry either."""
    return _digest({"retryOf": task_id})


def request_fingerprint(spec: TaskSpec, retry_of: str | None = None) -> str:
    """The fingerprint a store keeps with a request id: a retry's, or a submit's."""
    return retry_fingerprint(retry_of) if retry_of else spec_fingerprint(spec)


def composite_fingerprint(spec: CompositeSpec) -> str:
    """The fingerprint of a composite submit: the whole document as its parent stores it
    (canonical JSON, defaults included), without the requestId, which is the key."""
    doc = json.loads(spec.to_payload())
    doc.pop("requestId", None)
    return _digest({"composite": doc})


__all__ = [
    "IdempotencyConflict",
    "composite_fingerprint",
    "normalised",
    "request_fingerprint",
    "retry_fingerprint",
    "spec_fingerprint",
]
