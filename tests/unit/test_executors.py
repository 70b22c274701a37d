"""Executors run each task in its own process group, capture output with a cap, kill on timeout."""

import time

from common.domain.task import RUNNABLE_TYPES, Task, TaskSpec, TaskType
from common.executors import ExecutorLimits, PythonScriptExecutor, default_factory
from common.testing import eventually, process_alive


def make(task_type=TaskType.SHELL, payload="true", timeout=10):
    return Task.new(TaskSpec(task_type=task_type, payload=payload, execution_timeout=timeout))


def run(task, limits=None, **kw):
    return default_factory(limits).create(task.task_type).run(task, **kw)


def test_a_shell_task_captures_stdout_and_stderr_lines_and_exit_code():
    out = run(make(payload="echo out; echo err >&2; exit 4"))
    assert not out.success
    assert out.exit_code == 4
    assert out.result == "out\n"
    assert out.error == "exit code 4: err"
    assert out.lines == ["out", "[stderr] err"]


def test_a_timeout_kills_the_whole_process_group_including_background_children(tmp_path):
    pidfile = tmp_path / "child.pid"
    task = make(payload=f"sleep 300 & echo $! > {pidfile}; sleep 300", timeout=1)
    started = time.monotonic()
    out = run(task, ExecutorLimits(kill_grace_seconds=0.5))
    assert out.timed_out and not out.success
    assert "timed out after 1s" in out.error
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    eventually(lambda: not process_alive(child), timeout=5, message="background child killed")


def test_background_children_left_by_a_finished_task_are_killed(tmp_path):
    pidfile = tmp_path / "child.pid"
    out = run(make(payload=f"sleep 300 & echo $! > {pidfile}; echo done"))
    assert out.success and out.result == "done\n"
    child = int(pidfile.read_text())
    eventually(lambda: not process_alive(child), timeout=5, message="leftover child killed")


def test_output_is_capped_and_marked_truncated():
    out = run(make(payload="yes x | head -c 100000"), ExecutorLimits(output_cap_bytes=1000))
    assert out.success
    assert out.result.endswith("[output truncated]")
    assert len(out.result) < 1100


def test_a_cancel_signal_kills_a_running_task():
    calls = {"n": 0}

    def should_cancel():
        calls["n"] += 1
        return calls["n"] >= 2

    out = run(make(payload="sleep 30"), should_cancel=should_cancel)
    assert out.cancelled and not out.success
    assert out.duration < 5


def test_a_python_script_runs_isolated_and_reports_its_exit_code():
    out = run(make(TaskType.PYTHON_SCRIPT, "import sys\nprint(sum(range(5)))\nsys.exit(2)"))
    assert out.exit_code == 2
    assert out.result == "10\n"


def test_a_python_syntax_error_is_reported_without_starting_a_process():
    out = PythonScriptExecutor().run(make(TaskType.PYTHON_SCRIPT, "def ("))
    assert not out.success and out.exit_code is None
    assert out.error.startswith("syntax error in payload line 1")


def test_the_factory_builds_one_executor_per_type_and_rejects_unknown_types():
    factory = default_factory()
    assert factory.create(TaskType.SHELL) is factory.create(TaskType.SHELL)
    # HANDLER only for an agent with handlers to call: it advertises what it can run.
    # No agent runs a COMPOSITE parent: its coordinator does (RUNNABLE_TYPES leaves it out).
    assert set(factory.supported()) == set(RUNNABLE_TYPES) - {TaskType.HANDLER}
    with_handlers = default_factory(handlers=("common.examples.handlers:noop",))
    assert set(with_handlers.supported()) == set(RUNNABLE_TYPES)
