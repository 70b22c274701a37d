"""Errors as RFC 9457 problem details (`application/problem+json`).

Every error the API answers is a `Problem`: a status, a `type` (a URI reference naming the kind
of problem; this API serves a short description of each at that path), a `title` that is the
same for every instance of the type, a `detail` for this instance and, for bad input, `errors`:
every problem with its field and a JSON pointer into the request body. Raise a `Problem`
anywhere in request handling; the app's handler (and the ASGI links, which run before the app)
turn it into the response.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "/problems/"


def field_error(field: str, detail: str) -> dict[str, str]:
    """One entry of a problem's `errors`: the field, what is wrong, where in the body."""
    pointer = "#/" + "/".join(part for part in field.split(".") if part) if field else "#"
    return {"field": field, "detail": detail, "pointer": pointer}


class Problem(Exception):
    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str = "",
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extensions = extensions

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.slug

    def body(self, instance: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "title": self.title, "status": self.status}
        if self.detail:
            out["detail"] = self.detail
        if instance:
            out["instance"] = instance
        if self.errors:
            out["errors"] = self.errors
        out.update(self.extensions)
        return out

    def response(self, instance: str = "") -> JSONResponse:
        return JSONResponse(
            self.body(instance),
            status_code=self.status,
            headers=self.headers,
            media_type=PROBLEM_JSON,
        )
