"""schemathesis against the live `/openapi.json`: generated requests to every operation, valid
ones and invalid ones (negative mode); no answer is a server error, and every answer matches
the document: a documented status code, a documented content type, a body valid against its
schema.

The API runs over a provider on a Redis of its own and no agents: generated payloads are
random text, and a platform with agents would run them as shell commands. Without agents every
task stays PENDING, which the answers' schemas cover as well as any state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from rpc_support import free_port, wait_for_api
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from common.devstack.redis import RedisService
from common.testing.processes import RoleProcess

pytestmark = pytest.mark.integration

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# A synchronous submit waits up to `wait` seconds for a task that, without agents, never ends:
# generated waits are cut to this, or a few examples would use the whole time budget.
WAIT_CAP = 0.2


@pytest.fixture(scope="module")
def live_api(zookeeper_service, kafka_service, tmp_path_factory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("rest-schema")
    service = RedisService()
    running = service.start(workdir / "redis")
    env = {
        **running.env,
        **zookeeper_service.env,
        "TASKLAB_ZK_CHROOT": f"/tasklab-schema-{uuid.uuid4().hex[:8]}",
        **kafka_service.env,
    }
    address = f"127.0.0.1:{free_port()}"
    provider = RoleProcess("rpc", 4, env, workdir, name="rpc-schema").start()
    api = RoleProcess("api", 4, {**env, "TASKLAB_API_ADDRESS": address}, workdir, name="api-schema")
    api.start()
    try:
        wait_for_api(api, f"http://{address}")
        yield f"http://{address}"
    finally:
        for proc in (api, provider):
            proc.stop()
            text = proc.log_text()
            if "Traceback" in text:
                print(f"\n----- {proc.name} -----\n{text[-5000:]}")
        service.stop(running)


def test_every_operation_answers_without_server_errors_and_as_its_schema_says(live_api):
    # schemathesis' own pytest integration (`from_fixture`) does not run under this pytest
    # (it renames test nodes through a private attribute pytest no longer has), so each
    # operation's strategy is driven by hypothesis here, which is what that integration does.
    schema = schemathesis.openapi.from_url(live_api + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: dict[str, str] = {}
    calls: dict[str, int] = {}
    runs = [(op, mode) for op in operations for mode in GenerationMode]
    for operation, mode in runs:
        label = f"{operation.label} ({mode.value})"

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        def answers_as_documented(case) -> None:
            wait = (case.query or {}).get("wait")
            if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > 0:
                case.query["wait"] = min(wait, WAIT_CAP)
            calls[label] = calls.get(label, 0) + 1  # noqa: B023 - run before the loop moves on
            case.call_and_validate(base_url=live_api, checks=CHECKS, timeout=30)

        try:
            answers_as_documented()
        except Unsatisfiable:
            # An operation without parameters or body has no invalid request to make.
            if mode is not GenerationMode.NEGATIVE:
                raise
        except Exception as exc:  # noqa: BLE001 - collected: every operation is tried
            failures[label] = f"{type(exc).__name__}: {exc}"[:3000]
    print(calls)
    assert all(calls.get(op.label + " (positive)", 0) >= 1 for op in operations), calls
    assert not failures, "\n\n".join(f"{k}:\n{v}" for k, v in failures.items())
