"""Executors: how each task type runs. Build one with `ExecutorFactory.create(task_type)`."""

from common.executors.base import ExecutionResult, ExecutorLimits, TaskExecutor
from common.executors.factory import ExecutorFactory, default_factory
from common.executors.python_script import PythonScriptExecutor
from common.executors.shell import ShellTaskExecutor

__all__ = [
    "ExecutionResult",
    "ExecutorFactory",
    "ExecutorLimits",
    "PythonScriptExecutor",
    "ShellTaskExecutor",
    "TaskExecutor",
    "default_factory",
]
