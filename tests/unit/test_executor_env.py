"""Every task finds who it is in its environment (TASKLAB_TASK_ID, TASKLAB_ATTEMPT) and a
composite's child its place in its parent and its input, for every task type, whether it is
forked from a warm zygote, started by a fresh exec, or by the fallback when no zygote can be had.
"""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from common.domain.task import Task, TaskType
from common.executors import ExecutorLimits
from common.executors.base import TaskExecutor
from common.executors.handler import HandlerExecutor
from common.executors.python_script import PythonScriptExecutor
from common.executors.shell import ShellTaskExecutor
from common.executors.zygote import ZygoteError, ZygotePool

NAMES = ("TASK_ID", "ATTEMPT", "PARENT_ID", "SHARD_INDEX", "SHARD_TOTAL", "INPUT", "NODE")
DUMP = (
    "import json, os\n"
    f"names = {NAMES!r}\n"
    "print(json.dumps({n: os.environ[f'TASKLAB_{n}'] for n in names "
    "if f'TASKLAB_{n}' in os.environ}))\n"
)
PAYLOADS = {
    TaskType.SHELL: f"exec {shlex.quote(sys.executable)} -c {shlex.quote(DUMP)}",
    TaskType.PYTHON_SCRIPT: DUMP,
    TaskType.HANDLER: json.dumps({"handler": "common.examples.handlers:task_env"}),
}
# Room for the whole of a large input in the result: this checks the variables, not the cap.
LIMITS = ExecutorLimits(output_cap_bytes=1024 * 1024, kill_grace_seconds=0.5)
# Spaces, a newline, a tab, quotes, non-ASCII text, and ~100 KiB in all: a map item or a
# reduce step's input as the coordinator sets it.
LARGE_INPUT = json.dumps(
    {"words": "héllo wörld ✓ 日本\nline two\t'quoted' \"double\" $HOME `x`", "pad": "x" * 100_000},
    ensure_ascii=False,
)


class NoZygote(ZygotePool):
    """A pool whose zygotes never start: the executor must fall back to a fresh exec."""

    def _start(self, request, env=None):
        raise ZygoteError("no zygote in this test")

    def get(self):  # a HANDLER's warm worker would live in one
        raise ZygoteError("no zygote in this test")


def executor(task_type: TaskType, path: str) -> TaskExecutor:
    pool = NoZygote() if path == "no-zygote" else None
    warm = path != "fresh-exec"
    if task_type == TaskType.HANDLER:
        # "warm-fork" is the default: the call runs in a warm worker, which sets the task's
        # variables for the call and restores its own after it.
        return HandlerExecutor(
            LIMITS, pool=pool, warm_fork=warm, handlers=("common.examples.handlers:task_env",)
        )
    cls = ShellTaskExecutor if task_type == TaskType.SHELL else PythonScriptExecutor
    return cls(LIMITS, pool=pool, warm_fork=warm)


def task(task_type: TaskType, **fields) -> Task:
    return Task(
        task_id="0b6f1c2e-8d1a-5c3e-9f00-1234567890ab",
        task_name="env",
        task_type=task_type,
        payload=PAYLOADS[task_type],
        attempt=3,
        **fields,
    )


def variables(ex: TaskExecutor, t: Task) -> dict[str, str]:
    out = ex.run(t)
    assert out.success, out.error
    return json.loads(out.result)


TYPES = [TaskType.SHELL, TaskType.PYTHON_SCRIPT, TaskType.HANDLER]
PATHS = ["warm-fork", "fresh-exec", "no-zygote"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("task_type", TYPES, ids=lambda t: t.value)
def test_a_composites_child_finds_its_place_and_its_input_in_its_environment(task_type, path):
    ex = executor(task_type, path)
    try:
        child = task(
            task_type,
            parent_id="7c9e6679-7425-40de-944b-e07fc1f90ae7",
            role="item",
            shard_index=4,
            shard_total=12,
            node="extract.step-1",
            input=LARGE_INPUT,
        )
        assert variables(ex, child) == {
            "TASK_ID": child.task_id,
            "ATTEMPT": "3",
            "PARENT_ID": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "SHARD_INDEX": "4",
            "SHARD_TOTAL": "12",
            "INPUT": LARGE_INPUT,
            "NODE": "extract.step-1",
        }
    finally:
        ex.close()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("task_type", TYPES, ids=lambda t: t.value)
def test_a_plain_task_gets_its_id_and_attempt_and_nothing_of_a_composite(
    task_type, path, monkeypatch
):
    # Even when the agent itself runs with such variables (an agent started by a task): they
    # describe another task, not this one.
    monkeypatch.setenv("TASKLAB_SHARD_INDEX", "99")
    monkeypatch.setenv("TASKLAB_INPUT", "not yours")
    ex = executor(task_type, path)
    try:
        plain = task(task_type)
        assert variables(ex, plain) == {"TASK_ID": plain.task_id, "ATTEMPT": "3"}
    finally:
        ex.close()


@pytest.mark.parametrize("task_type", TYPES, ids=lambda t: t.value)
def test_one_tasks_variables_never_reach_the_next_task_the_same_warm_process_runs(task_type):
    # The same zygote forks both tasks; for HANDLER, the same warm worker calls both.
    ex = executor(task_type, "warm-fork")
    try:
        child = task(task_type, parent_id="7c9e6679-7425-40de-944b-e07fc1f90ae7", shard_index=1)
        assert variables(ex, child)["SHARD_INDEX"] == "1"
        plain = task(task_type).model_copy(update={"attempt": 1})
        assert variables(ex, plain) == {"TASK_ID": plain.task_id, "ATTEMPT": "1"}
    finally:
        ex.close()
