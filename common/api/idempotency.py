"""The idempotency link: one key per request, from the header or the body, never two.

A client may name its request with an `Idempotency-Key` header (the IETF draft's name, what
HTTP clients and proxies know) or with `requestId` in the body (the domain's name, what the
CLI and the queue messages use). Both mean the same: the TaskService maps one key to one task,
so a submit repeated after a lost answer returns the first task instead of running it twice.
Given both, they must agree: two different keys on one request is a mistake to name (422), not
a choice for the server to make silently.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Header

from common.api import catalog
from common.api.problems import field_error

MAX_KEY = 200  # as the domain's requestId

KeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=MAX_KEY,
        description="Names this request: the same key returns the same result.",
    ),
]


class Idempotency:
    """The request's idempotency key, or None; a FastAPI dependency (`Depends(Idempotency)`)."""

    def __init__(self, idempotency_key: KeyHeader = None) -> None:
        self.header = idempotency_key

    def key(self, body_request_id: str | None = None) -> str | None:
        if self.header and body_request_id and self.header != body_request_id:
            raise catalog.validation(
                [
                    field_error(
                        "requestId",
                        "differs from the Idempotency-Key header; send one key, or the same "
                        "key in both",
                    )
                ]
            )
        return self.header or body_request_id


async def idempotency(idempotency_key: KeyHeader = None) -> Idempotency:
    """`Depends(idempotency)`: the same, for a route that must not leave the event loop.
    FastAPI calls a class dependency (as any plain callable) on its thread pool; reading one
    header does not need a thread."""
    return Idempotency(idempotency_key)
