"""A payload the OS or the compiler refuses fails its attempt with the reason; nothing raises.

Each case runs real processes: the warm-fork path (a zygote forks or posix_spawns the child)
and the fresh-exec path (`subprocess.Popen`). After each refusal the next task still runs,
and on the warm-fork path it runs in the same zygote: a bad payload never costs a zygote.
Payloads the domain would already reject (lone surrogates, more than 64 KiB) are built with
`Task.model_construct`, as a task read from a store by a buggy or older writer would be.
"""

import os
import signal
import socket
import threading
import time

import pytest

from common.domain.task import Task, TaskSpec, TaskType
from common.executors import ExecutorLimits, PythonScriptExecutor, ShellTaskExecutor
from common.executors.process import SpawnError
from common.executors.zygote import ZygotePool
from common.testing import eventually, process_alive
from common.testing.processes import KILL_MY_ZYGOTE

LIMITS = ExecutorLimits(kill_grace_seconds=0.3)


def task(task_type, payload, timeout=10):
    return Task.new(TaskSpec(task_type=task_type, payload=payload, execution_timeout=timeout))


def raw_task(task_type, payload, timeout=10):
    """A task that skipped the domain's validation (see the module docstring)."""
    return Task.model_construct(
        task_id="t-raw",
        task_name="raw",
        task_type=task_type,
        payload=payload,
        execution_timeout=timeout,
    )


@pytest.fixture
def pool():
    pool = ZygotePool()
    yield pool
    pool.close()


def shell_parent(executor):
    """The pid of the process that started a shell task: the zygote, on the warm-fork path."""
    out = executor.run(task(TaskType.SHELL, "echo $PPID"))
    assert out.success, out.error
    return int(out.result)


SHELL_REFUSALS = [
    pytest.param("echo a\0b", "null byte", id="nul-byte"),
    pytest.param("echo \ud800", "surrogate", id="lone-surrogate"),
    pytest.param("echo " + "x" * 200_000, "Argument list too long", id="e2big"),
]


@pytest.mark.parametrize(("payload", "reason"), SHELL_REFUSALS)
def test_a_shell_payload_the_os_refuses_fails_and_the_same_zygote_runs_the_next_task(
    pool, payload, reason
):
    executor = ShellTaskExecutor(LIMITS, pool=pool)
    zygote = shell_parent(executor)

    out = executor.run(raw_task(TaskType.SHELL, payload))

    assert not out.success and out.exit_code is None
    assert out.error.startswith("could not start the task:") and reason in out.error
    assert shell_parent(executor) == zygote


@pytest.mark.parametrize(("payload", "reason"), SHELL_REFUSALS)
def test_a_shell_payload_the_os_refuses_fails_without_warm_fork_too(payload, reason):
    executor = ShellTaskExecutor(LIMITS, warm_fork=False)

    out = executor.run(raw_task(TaskType.SHELL, payload))

    assert not out.success and out.exit_code is None
    assert reason in out.error
    assert executor.run(task(TaskType.SHELL, "echo next")).result == "next\n"


@pytest.mark.parametrize("warm_fork", [True, False], ids=["warm-fork", "fresh-exec"])
def test_an_exec_that_fails_ends_the_attempt_with_the_reason(pool, warm_fork):
    class MissingShell(ShellTaskExecutor):
        shell = "/nonexistent/sh"

    executor = MissingShell(LIMITS, pool=pool if warm_fork else None, warm_fork=warm_fork)
    shell = ShellTaskExecutor(LIMITS, pool=pool)
    zygote = shell_parent(shell)

    out = executor.run(task(TaskType.SHELL, "echo never"))

    assert not out.success and out.exit_code is None
    assert "No such file or directory" in out.error
    # On the warm-fork path the refusal came from the zygote's posix_spawn; it lives on.
    assert shell_parent(shell) == zygote


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param("def (", "syntax error in payload line 1", id="syntax-error"),
        pytest.param("print(1)\0", "null bytes", id="nul-byte"),
        pytest.param("print('\ud800')", "surrogate", id="lone-surrogate"),
        pytest.param("x = " + "1+" * 200_000 + "1", "recursion", id="nested-too-deep"),
    ],
)
def test_a_python_payload_the_compiler_refuses_fails_before_any_process_starts(
    pool, payload, reason
):
    executor = PythonScriptExecutor(LIMITS, pool=pool)

    out = executor.run(raw_task(TaskType.PYTHON_SCRIPT, payload))

    assert not out.success and out.exit_code is None
    assert reason in out.error.lower()
    assert executor.run(task(TaskType.PYTHON_SCRIPT, "print('next')")).result == "next\n"


def test_a_python_payload_too_long_for_a_command_line_runs_in_the_zygote_and_fails_fresh(pool):
    # The zygote gets the source over its socket: no argv limit. A fresh `python -c` cannot.
    source = "x = 1\n" + "#" * 200_000 + "\nprint(x)"
    warm = PythonScriptExecutor(LIMITS, pool=pool).run(raw_task(TaskType.PYTHON_SCRIPT, source))
    fresh = PythonScriptExecutor(LIMITS, warm_fork=False).run(
        raw_task(TaskType.PYTHON_SCRIPT, source)
    )

    assert warm.success and warm.result == "1\n"
    assert not fresh.success and "Argument list too long" in fresh.error


def run_in_background(executor, the_task, first_line):
    """Start `the_task` on a thread; returns (thread, results list) once it printed a line."""
    results = []
    seen = threading.Event()

    def on_line(stream, line):
        if stream == "stdout" and not first_line:
            first_line.append(line)
            seen.set()

    thread = threading.Thread(target=lambda: results.append(executor.run(the_task, on_line)))
    thread.start()
    assert seen.wait(15), "the task never printed its first line"
    return thread, results


def test_a_zygote_killed_mid_task_fails_that_attempt_and_the_next_task_gets_a_new_zygote(
    pool, tmp_path
):
    executor = ShellTaskExecutor(LIMITS, pool=pool)
    pidfile = tmp_path / "sleep.pid"
    first_line = []
    # The background pid is written before the first line, so both are known once it arrives.
    long_task = task(TaskType.SHELL, f"sleep 300 & echo $! > {pidfile}; echo $PPID; wait", 60)
    thread, results = run_in_background(executor, long_task, first_line)
    zygote = int(first_line[0])
    sleeper = int(pidfile.read_text())

    os.kill(zygote, signal.SIGKILL)
    thread.join(10)

    assert not thread.is_alive()
    (out,) = results
    assert not out.success and out.exit_code == -9
    assert out.error == "the zygote running the task died; its exit status is lost"
    # The agent still killed the task's process group: nothing of it runs on.
    eventually(lambda: not process_alive(sleeper), timeout=2, message="task group killed")
    assert shell_parent(executor) not in (zygote, os.getpid())


def test_a_zygote_whose_socket_breaks_mid_task_fails_that_attempt_and_kills_the_task(pool):
    started = []
    get = pool.get
    pool.get = lambda: started.append(get()) or started[-1]
    executor = PythonScriptExecutor(LIMITS, pool=pool)
    script = "import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(300)\n"
    first_line = []
    thread, results = run_in_background(
        executor, task(TaskType.PYTHON_SCRIPT, script, 60), first_line
    )
    task_pid = int(first_line[0])

    # The agent's end of the socket breaks: the zygote sees EOF, kills the task and exits.
    started[-1].sock.shutdown(socket.SHUT_RDWR)
    thread.join(10)

    assert not thread.is_alive()
    (out,) = results
    assert not out.success
    assert out.error == "the zygote running the task died; its exit status is lost"
    eventually(lambda: not process_alive(task_pid), timeout=2, message="task killed")
    assert executor.run(task(TaskType.PYTHON_SCRIPT, "print('next')")).result == "next\n"


def test_the_interrupted_attempt_ends_within_its_deadline_not_at_the_next_poll(pool):
    # A zygote that dies leaves its task's pipes open (the task lives on until the group
    # kill): run() must notice the death itself, not wait for the task's timeout.
    executor = PythonScriptExecutor(LIMITS, pool=pool)
    started = time.monotonic()
    out = executor.run(task(TaskType.PYTHON_SCRIPT, KILL_MY_ZYGOTE + "time.sleep(60)\n", 60))
    assert not out.success and time.monotonic() - started < 5
    assert "not started by a zygote" not in (out.error or "")


def test_a_request_the_zygote_cannot_start_is_refused_and_the_zygote_serves_the_next(pool):
    zygote = shell_parent(ShellTaskExecutor(LIMITS, pool=pool))

    with pytest.raises(SpawnError, match="KeyError: 'argv'"):
        pool._start({"op": "exec"})

    assert shell_parent(ShellTaskExecutor(LIMITS, pool=pool)) == zygote
