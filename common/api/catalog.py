"""The kinds of problem the API answers with, one entry each: the `type` a client can switch on.

Each is served at `/problems/{slug}` (the `type` of a problem is that relative URI), so a
person following the link from an error reads what it means and what to do. The factories
below build the `Problem` of each kind; nothing else in the API invents a slug or a title.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.api.problems import Problem


@dataclass(frozen=True)
class ProblemType:
    slug: str
    status: int
    title: str
    description: str


CATALOG: dict[str, ProblemType] = {
    p.slug: p
    for p in (
        ProblemType(
            "validation",
            422,
            "The request is not valid",
            "A field is missing, has the wrong type or is out of range, or the body is not "
            "JSON (400). `errors` lists every problem at once, each with its `field` and, for "
            "the body, a JSON `pointer`. Fix them all and send the request again.",
        ),
        ProblemType(
            "unauthenticated",
            401,
            "Authentication is required",
            "Send `X-API-Key: KEY` or `Authorization: Bearer JWT`; the `WWW-Authenticate` "
            "header names the schemes this API accepts.",
        ),
        ProblemType(
            "forbidden",
            403,
            "Not allowed for this caller",
            "The credential is valid but lacks the role: TaskRead reads, TaskWrite submits, "
            "cancels and retries, Admin does everything.",
        ),
        ProblemType(
            "task-not-found",
            404,
            "No such task",
            "No task has this id: it was never submitted, or retention deleted it.",
        ),
        ProblemType(
            "not-found",
            404,
            "No such resource",
            "Nothing is served at this path; the OpenAPI document at /openapi.json lists "
            "every path.",
        ),
        ProblemType(
            "method-not-allowed",
            405,
            "Method not allowed",
            "This path exists but does not answer this method; the `Allow` header lists the "
            "ones it answers.",
        ),
        ProblemType(
            "not-acceptable",
            406,
            "Not acceptable",
            "This resource is served as JSON (and, for a log follow, as text/event-stream).",
        ),
        ProblemType(
            "illegal-transition",
            409,
            "Not allowed in the task's state",
            "The task's state does not allow this: a finished (SUCCESS or FAILED) task cannot "
            "be cancelled; only a FAILED or CANCELLED task can be retried.",
        ),
        ProblemType(
            "schedule-not-found",
            404,
            "No such schedule",
            "No cron schedule has this name: it was never created, or it was deleted.",
        ),
        ProblemType(
            "schedule-exists",
            409,
            "A schedule of this name exists",
            "A schedule's name is its id. Delete the existing one first, or choose another name.",
        ),
        ProblemType(
            "idempotency-conflict",
            409,
            "Idempotency key already used for another request",
            "The Idempotency-Key (or requestId) was used before with a different body. Reuse a "
            "key only to repeat the very same request; use a new key for a new one.",
        ),
        ProblemType(
            "payload-too-large",
            413,
            "Request too large",
            "The body, or the task's payload, is over the configured limit.",
        ),
        ProblemType(
            "uri-too-long",
            414,
            "Request URI too long",
            "The path and query string are over the configured limit (api.security.max_url_bytes).",
        ),
        ProblemType(
            "headers-too-large",
            431,
            "Request headers too large",
            "The request's headers are over the configured limit (api.security.max_header_bytes).",
        ),
        ProblemType(
            "unsupported-media-type",
            415,
            "Unsupported media type",
            "Send the request body as application/json.",
        ),
        ProblemType(
            "rate-limited",
            429,
            "Too many requests",
            "This caller's request budget is spent for now; `Retry-After` says when to try again.",
        ),
        ProblemType(
            "service-unavailable",
            503,
            "A backing service is unavailable",
            "A service the API needs (Redis, ZooKeeper, Kafka or every TaskService provider) "
            "did not answer in time. Nothing was half-done: the request can be sent again "
            "after `Retry-After` seconds, with the same Idempotency-Key for a submit.",
        ),
        ProblemType(
            "deadline-exceeded",
            503,
            "The request did not finish in time",
            "The TaskService did not answer within the request's deadline. A submit sent "
            "again with the same Idempotency-Key returns the task if the first one was stored.",
        ),
        ProblemType(
            "unexpected-error",
            503,
            "The request could not be handled",
            "Something the API does not expect went wrong; it is logged with the `instance` "
            "path. Every change the API makes is one atomic step on the providers, so nothing "
            "was half-done; trying again may work.",
        ),
    )
}


def problem(slug: str, detail: str = "", **kwargs) -> Problem:
    kind = CATALOG[slug]
    status = kwargs.pop("status", kind.status)
    return Problem(status, slug, kind.title, detail, **kwargs)


def validation(errors: list[dict[str, str | None]], status: int = 422) -> Problem:
    fields = ", ".join(e["field"] or "request" for e in errors)
    return problem("validation", f"invalid: {fields}", errors=errors, status=status)


def task_not_found(task_id: str) -> Problem:
    return problem("task-not-found", f"no task {task_id}")


def unavailable(detail: str, retry_after: int = 1, **extensions) -> Problem:
    headers = {"Retry-After": str(retry_after)}
    return problem("service-unavailable", detail, headers=headers, **extensions)
