"""Runs a PYTHON_SCRIPT task's payload as Python source in a child process of its own.

The child is forked from a warm zygote (see zygote.py) and runs the source there: the same
isolation, capture and process-group kill as a fresh `python -I -c SOURCE`, for about a
thirtieth of the start-up cost. If no zygote can be had, `prepare`'s argv runs instead.
"""

from __future__ import annotations

import functools
import sys

from common.domain.task import Task, TaskType
from common.executors.base import TaskExecutor, task_environment
from common.executors.process import Child
from common.executors.zygote import ZygotePool

# The same short script submitted again and again (a job's many runs) is compiled once to be
# checked; long sources are not kept, so the cache holds at most 256 x 4 KiB.
_REMEMBERED_SOURCE_CHARS = 4096


def _compile_problem(source: str) -> str | None:
    try:
        compile(source, "<task>", "exec")
    except SyntaxError as exc:
        where = f" line {exc.lineno}" if exc.lineno else ""
        return f"syntax error in payload{where}: {exc.msg}"
    except Exception as exc:  # noqa: BLE001 - NUL byte, lone surrogate, nesting too deep
        return f"payload cannot be compiled: {type(exc).__name__}: {exc}"
    return None


_remembered_problem = functools.lru_cache(maxsize=256)(_compile_problem)


class PythonScriptExecutor(TaskExecutor):
    task_type = TaskType.PYTHON_SCRIPT

    def validate(self, task: Task) -> str | None:
        problem = super().validate(task)
        if problem:
            return problem
        # Reject a syntax error here, with its line, rather than paying for a process to say so.
        if len(task.payload) <= _REMEMBERED_SOURCE_CHARS:
            return _remembered_problem(task.payload)
        return _compile_problem(task.payload)

    def prepare(self, task: Task) -> list[str]:
        # -I: isolated mode (no user site-packages, no PYTHON* env vars, script dir not on path),
        # so a task cannot be steered by the agent's environment. The zygote runs with -I too.
        return [sys.executable, "-I", "-c", task.payload]

    def start_in_zygote(self, pool: ZygotePool, task: Task, argv: list[str]) -> Child:
        # The source runs in the forked interpreter itself: no exec, no interpreter start.
        # "<string>" is what `python -c` names the source in a traceback.
        return pool.run(task.payload, "<string>", env=task_environment(task))
