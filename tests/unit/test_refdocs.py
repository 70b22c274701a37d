"""The API reference pages are generated, and the committed ones are what their sources make now.

docs/reference/grpc.md comes from the .proto (its comments included), docs/reference/rest.md
from the REST API's OpenAPI document, both by tools/refdocs.py. A page edited by hand, or a
source changed without running the tool, fails here.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tools import refdocs

ANCHOR = re.compile(r"\{#([a-z0-9-]+)\}")
IN_PAGE_LINK = re.compile(r"\]\(#([^)]+)\)")


def dangling_links(page: str) -> set[str]:
    return set(IN_PAGE_LINK.findall(page)) - set(ANCHOR.findall(page))


# -- gRPC -----------------------------------------------------------------------------------
def test_the_committed_grpc_reference_is_what_the_proto_generates_now():
    assert refdocs.stale(["grpc"]) == [], "run `.venv/bin/python tools/refdocs.py grpc`"


def test_the_grpc_page_has_every_method_message_field_and_enum_value_with_its_comment():
    files = refdocs.descriptor_set()
    page = refdocs.render_grpc(files)
    proto = files.file[-1]
    for method in proto.service[0].method:
        assert f"### {method.name} {{#method-taskservice-{method.name.lower()}}}" in page
    for message in proto.message_type:
        assert f"### {message.name} {{#message-{message.name.lower()}}}" in page
        for field in message.field:
            assert f"| `{field.name}` | {field.number} |" in page, (message.name, field.name)
    for enum in proto.enum_type:
        for value in enum.value:
            assert f"| `{value.name}` | {value.number} |" in page
    # Comments of each kind: the file's, a method's, a field's trailing one, a oneof member's.
    assert "DEADLINE_EXCEEDED    the call's deadline passed" in page
    assert "rpc Watch(WatchRequest) returns (stream WatchEvent);" in page
    assert "| `retry_count` | 5 | optional `int32` | `retryCount` | 0-10; absent = 0 |" in page
    assert "| `final` | 4 | oneof `event`: [`Task`](#message-task) | `final` |" in page
    assert dangling_links(page) == set()


def test_a_comment_changed_in_the_proto_changes_the_generated_page(tmp_path):
    copy = tmp_path / refdocs.PROTO
    copy.parent.mkdir(parents=True)
    shutil.copy(refdocs.PROTO_ROOT / refdocs.PROTO, copy)
    text = copy.read_text()
    copy.write_text(text.replace("// A task with its timeline and log lines.", "// Changed."))
    changed = refdocs.render_grpc(refdocs.descriptor_set(refdocs.PROTO, tmp_path))
    assert changed != refdocs.GRPC_PAGE.read_text()
    assert "| [`GetTaskInfo`](#method-taskservice-gettaskinfo) |" in changed
    assert "Changed." in changed


# -- REST -----------------------------------------------------------------------------------
def test_the_committed_rest_reference_is_what_the_openapi_document_generates_now():
    try:
        expected = refdocs.render_rest(refdocs.openapi_document())
    except refdocs.SourceUnavailable as exc:
        pytest.skip(f"needs common.api ({exc})")
    assert refdocs.REST_PAGE.exists(), "run `.venv/bin/python tools/refdocs.py rest`"
    assert refdocs.REST_PAGE.read_text() == expected, "run `.venv/bin/python tools/refdocs.py`"


PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
DOCUMENT = {
    "openapi": "3.1.0",
    "info": {"title": "tasklab", "version": "0.4.0", "description": "The task API."},
    "paths": {
        "/api/v1/tasks": {
            "post": {
                "summary": "Submit a task",
                "description": "Idempotent by requestId or Idempotency-Key.",
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "anyOf": [
                                {"type": "integer", "exclusiveMinimum": 0, "maximum": 300},
                                {"type": "null"},
                            ]
                        },
                        "description": "Answer when the task is final.",
                    },
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "schema": {"type": "string", "maxLength": 200},
                    },
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SubmitBody"},
                            "examples": {
                                "shell": {
                                    "summary": "A shell task",
                                    "value": {"taskType": "SHELL", "payload": "echo hi"},
                                }
                            },
                        }
                    },
                },
                "responses": {
                    "201": {
                        "description": "Created",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/TaskView"},
                                "example": {"taskId": "t-1", "status": "PENDING"},
                            }
                        },
                    },
                    "422": {
                        "description": "Invalid | every field",
                        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
                    },
                },
            }
        },
        "/api/v1/tasks/{taskId}": {
            "parameters": [
                {"name": "taskId", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "delete": {
                "summary": "Cancel a task",
                "responses": {
                    "200": {"description": "Cancelled"},
                    "409": {
                        "description": "Already finished",
                        "content": {"application/problem+json": {"schema": PROBLEM_REF}},
                    },
                },
            },
        },
    },
    "components": {
        "schemas": {
            "SubmitBody": {
                "type": "object",
                "required": ["taskType", "payload"],
                "properties": {
                    "taskType": {"enum": ["SHELL", "PYTHON_SCRIPT"]},
                    "payload": {"type": "string", "minLength": 1},
                    "executionTimeout": {"type": "integer", "default": 60, "maximum": 86400},
                },
            },
            "TaskView": {
                "type": "object",
                "properties": {
                    "taskId": {"type": "string"},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "agentId": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                },
            },
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": ["type", "title", "status"],
                "properties": {
                    "type": {"type": "string", "description": "/problems/<slug>"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "errors": {
                        "type": "array",
                        "items": {"$ref": "#/components/schemas/FieldError"},
                    },
                },
                "examples": [{"type": "/problems/task-not-found", "title": "Task not found"}],
            },
            "FieldError": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "pointer": {"type": "string"}},
            },
        }
    },
}


def test_the_rest_page_shows_paths_parameters_bodies_responses_problems_and_examples():
    page = refdocs.render_rest(DOCUMENT)
    assert "**tasklab** 0.4.0, OpenAPI 3.1.0." in page
    assert "| `POST` | [`/api/v1/tasks`](#op-post-api-v1-tasks) | Submit a task |" in page
    assert "### `DELETE /api/v1/tasks/{taskId}` {#op-delete-api-v1-tasks-taskid}" in page
    # Parameters: the query's bounds, a header, and the path's shared one under each method.
    # The bounds of an optional parameter sit inside its anyOf; they are shown all the same.
    assert (
        "| `wait` | query | `integer` or `null` | no | Answer when the task is final. "
        "(> 0; ≤ 300) |" in page
    )
    assert "| `Idempotency-Key` | header | `string` | no | (length ≤ 200) |" in page
    assert "| `taskId` | path | `string` | yes |   |" in page
    # The body, its schema linked, and its named example.
    assert "Request body (required), `application/json`: [`SubmitBody`](#schema-submitbody)" in page
    assert "*Example request: A shell task*" in page
    assert '  "payload": "echo hi"' in page
    # Responses: headers, problem bodies, a pipe in a description escaped, examples.
    assert (
        "| 201 | Created | `application/json` [`TaskView`](#schema-taskview) | `Location` |" in page
    )
    assert (
        "| 422 | Invalid \\| every field | `application/problem+json` "
        "[`Problem`](#schema-problem) | — |" in page
    )
    assert "*Example 201 response*" in page
    # Schemas: required marks, enums, defaults, nullable fields, arrays of refs, examples.
    assert '| `taskType` | one of `"SHELL"`, `"PYTHON_SCRIPT"` | yes |   |' in page
    assert "| `executionTimeout` | `integer` | no | (≤ 86400; default `60`) |" in page
    assert "| `createdAt` | `string` (date-time) | no |   |" in page
    assert "| `agentId` | `string` or `null` | no |   |" in page
    assert "| `errors` | array of [`FieldError`](#schema-fielderror) | no |   |" in page
    assert '*Example*\n\n```json\n{\n  "type": "/problems/task-not-found",' in page
    assert dangling_links(page) == set()


def test_the_generator_fails_loudly_when_a_source_is_unavailable(monkeypatch, capsys):
    def missing() -> str:
        raise refdocs.SourceUnavailable("no OpenAPI document here")

    monkeypatch.setitem(refdocs.PAGES, "rest", (refdocs.REST_PAGE, missing))
    before = refdocs.REST_PAGE.read_text() if refdocs.REST_PAGE.exists() else None
    assert refdocs.main(["rest"]) == 1
    assert "docs/reference/rest.md: no OpenAPI document here" in capsys.readouterr().err
    after = refdocs.REST_PAGE.read_text() if refdocs.REST_PAGE.exists() else None
    assert after == before
