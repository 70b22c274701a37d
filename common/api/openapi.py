"""The OpenAPI document: FastAPI's, with problems under their own media type.

FastAPI documents an extra response's model as application/json; the API answers problems as
application/problem+json, so the schema is moved there (a client generator and schemathesis
then check a problem against the schema it really has). `common.api.app.openapi_document()`
builds it offline, for the docs' REST reference.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from common.api.catalog import CATALOG
from common.api.links import is_public

PROBLEM_JSON = "application/problem+json"


FASTAPI_422 = "#/components/schemas/HTTPValidationError"
PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}


# What the links in front of the app may answer instead of a route (common.api.links): on
# every path the size checks; on every path that is not public, auth and the rate limit; and
# where the route checks a role, 403.
EVERY_PATH = (413, 414, 431)
NOT_PUBLIC = (401, 429)
WITH_A_ROLE = (403,)


def _link_responses(path: str, operation: dict[str, Any]) -> None:
    statuses = list(EVERY_PATH)
    if not is_public(path):
        statuses += NOT_PUBLIC
    if operation.get("security"):
        statuses += WITH_A_ROLE
    by_status = {kind.status: kind for kind in CATALOG.values()}
    for status in statuses:
        operation["responses"].setdefault(
            str(status),
            {
                "description": f"{by_status[status].title} (a problem, RFC 9457).",
                "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
            },
        )


def _problems_as_problem_json(document: dict[str, Any]) -> dict[str, Any]:
    for name, path in document.get("paths", {}).items():
        for operation in path.values():
            _link_responses(name, operation)
            for status, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
                elif (
                    content.get("application/json", {}).get("schema", {}).get("$ref") == FASTAPI_422
                ):
                    # FastAPI's own 422 entry, where a route did not list 422 itself: the API
                    # answers it as a problem like every other error.
                    operation["responses"][status] = {
                        "description": "A problem (RFC 9457).",
                        "content": {PROBLEM_JSON: {"schema": PROBLEM_SCHEMA}},
                    }
    schemas = document.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def install(app: FastAPI) -> None:
    def custom() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            app.openapi_schema = _problems_as_problem_json(document)
        return app.openapi_schema

    app.openapi = custom  # type: ignore[method-assign]
