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


def _problems_as_problem_json(document: dict[str, Any]) -> dict[str, Any]:
    for path in document.get("paths", {}).values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                content = response.get("content", {})
                if PROBLEM_JSON in content and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
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
