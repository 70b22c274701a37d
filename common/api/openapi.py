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

PROBLEM_JSON = "application/problem+json"


FASTAPI_422 = "#/components/schemas/HTTPValidationError"
PROBLEM_SCHEMA = {"$ref": "#/components/schemas/ProblemDetails"}


def _problems_as_problem_json(document: dict[str, Any]) -> dict[str, Any]:
    for path in document.get("paths", {}).values():
        for operation in path.values():
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
