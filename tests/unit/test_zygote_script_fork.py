"""What a PYTHON_SCRIPT child keeps now that the zygote does less per fork.

The zygote compiles a repeated script once, keeps one __main__ for every child, computes the
task's variables before the fork and detaches its socket in the child rather than closing it
through socket.py; the agent polls the pipes with poll(2). Each test below is a promise of
`python -I -c SOURCE` that one of these could have broken.
"""

from __future__ import annotations

import os
import signal
import threading

from common.executors import ExecutorLimits, PythonScriptExecutor
from common.executors.process import run_process
from common.executors.zygote import ZygotePool
from common.testing import eventually, process_alive
from common.testing.tasks import script_task


def _zygote_pid(script_executor: PythonScriptExecutor) -> int:
    script_executor.warm(1)
    (zygote,) = script_executor.pool._idle
    return zygote.proc.pid


def test_the_same_script_run_again_starts_from_empty_globals_and_its_own_main(script_executor):
    # Compiled once and cached in the zygote: each run must still get a fresh __main__.
    script = (
        "import sys\n"
        "print('seen' in globals(), sys.modules['__main__'].__dict__ is globals())\n"
        "seen = 1\n"
        "sys.modules['__main__'].marker = 1\n"
    )
    runs = [script_executor.run(script_task(script)) for _ in range(3)]
    assert [r.result for r in runs] == ["False True\n"] * 3


def test_a_script_that_cannot_compile_in_the_zygote_fails_every_time_and_the_next_runs():
    # Below the script_executor's own compile check: the zygote's cache must not keep a failure,
    # nor a failure stop the zygote.
    pool = ZygotePool()
    try:
        for _ in range(2):
            out = run_process([], timeout=10, spawn=lambda: pool.run("def (", "<string>"))
            assert out.exit_code == 1
            assert "SyntaxError: invalid syntax" in out.stderr
        ok = run_process([], timeout=10, spawn=lambda: pool.run("print('ok')", "<string>"))
        assert (ok.exit_code, ok.stdout) == (0, "ok\n")
    finally:
        pool.close()


def test_the_child_holds_only_its_three_standard_streams(script_executor):
    # The zygote's socket (detached, then closed) and the /dev/null the agent keeps open
    # must not reach the task: one more fd here is the listing's own.
    out = script_executor.run(
        script_task(
            "import os\n"
            "fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n"
            "print(len(fds), fds[:3], os.readlink('/proc/self/fd/0'))"
        )
    )
    assert out.result == "4 [0, 1, 2] /dev/null\n"


def test_the_tasks_variables_are_in_os_environ_and_in_what_a_subprocess_inherits(script_executor):
    # The child sets them below os.environ's own setter: both views must agree.
    task = script_task(
        "import os, subprocess\n"
        "seen = subprocess.run(['/bin/sh', '-c', 'echo $TASKLAB_TASK_ID $TASKLAB_ATTEMPT'],"
        " capture_output=True, text=True).stdout.split()\n"
        "print(seen == [os.environ['TASKLAB_TASK_ID'], os.environ['TASKLAB_ATTEMPT']], seen[0])"
    )
    assert script_executor.run(task).result == f"True {task.task_id}\n"


def test_a_variable_of_the_agents_own_environment_that_the_task_lacks_is_removed(monkeypatch):
    # The zygote inherits TASKLAB_NODE from the agent; a task without a node must not see it,
    # and a task after one that removed it must not see it come back set by the first.
    monkeypatch.setenv("TASKLAB_NODE", "from-the-agent")
    ex = PythonScriptExecutor(ExecutorLimits(kill_grace_seconds=0.5))
    try:
        script = "import os\nprint(os.environ.get('TASKLAB_NODE'), os.environ['TASKLAB_TASK_ID'])"
        first, second = script_task(script), script_task(script)
        assert ex.run(first).result == f"None {first.task_id}\n"
        assert ex.run(second).result == f"None {second.task_id}\n"
    finally:
        ex.close()


def test_a_timeout_kills_the_script_and_the_process_it_started(script_executor, tmp_path):
    pid_file = tmp_path / "child.pid"
    out = script_executor.run(
        script_task(
            "import subprocess, time\n"
            "p = subprocess.Popen(['sleep', '300'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
            "print('started', flush=True)\n"
            "time.sleep(300)",
            timeout=1,
        )
    )
    assert out.timed_out and not out.success
    assert out.lines == ["started"]
    eventually(lambda: not process_alive(int(pid_file.read_text())), timeout=5)


def test_a_cancel_kills_the_script_and_keeps_the_lines_it_printed(script_executor):
    cancel = threading.Event()

    def on_line(stream: str, line: str) -> None:
        if line == "two":
            cancel.set()

    out = script_executor.run(
        script_task("import time\nprint('one')\nprint('two', flush=True)\ntime.sleep(300)"),
        on_line=on_line,
        should_cancel=cancel.is_set,
    )
    assert out.cancelled and not out.success
    assert out.lines == ["one", "two"]


def test_a_stream_closed_early_still_gives_every_line_and_the_exit_code(script_executor):
    # The writer's end of stdout closes long before the script ends: poll reports a hang-up,
    # the capture reads to the end of that stream and goes on with the other one.
    out = script_executor.run(
        script_task(
            "import os, sys, time\n"
            "print('a', flush=True)\n"
            "os.close(1)\n"
            "time.sleep(0.3)\n"
            "print('b', file=sys.stderr)\n"
            "sys.exit(5)"
        )
    )
    assert out.exit_code == 5
    assert out.lines == ["a", "[stderr] b"]


def test_a_zygote_killed_under_a_running_script_fails_it_clearly_and_a_new_one_runs_the_next(
    script_executor,
):
    zygote = _zygote_pid(script_executor)
    started: list[int] = []

    def on_line(stream: str, line: str) -> None:
        started.append(int(line))

    def kill_when_started() -> bool:
        # The cancel hook runs in the script_executor's loop: the fault is injected mid-run.
        if started and process_alive(zygote):
            os.kill(zygote, signal.SIGKILL)
        return False

    out = script_executor.run(
        script_task("import os, time\nprint(os.getpid(), flush=True)\ntime.sleep(300)", timeout=30),
        on_line=on_line,
        should_cancel=kill_when_started,
    )
    assert not out.success
    assert out.error == "the zygote running the task died; its exit status is lost"
    # The agent killed the task's group itself: the script does not run on as an orphan.
    eventually(lambda: not process_alive(started[0]), timeout=5)
    after = script_executor.run(script_task("import os\nprint(os.getppid())"))
    assert after.success and int(after.result) != zygote


def test_a_task_variable_the_environment_cannot_hold_fails_the_start_with_the_reason():
    # A lone surrogate cannot be encoded for the environment: the zygote finds out before the
    # fork and says why, and serves the next task (the child used to exit 1 without a word).
    pool = ZygotePool()
    try:
        out = run_process(
            [],
            timeout=10,
            spawn=lambda: pool.run("print('ran')", "<string>", env={"TASKLAB_INPUT": "a\ud800"}),
        )
        assert out.exit_code is None and out.stdout == ""
        assert out.error.startswith("could not start the task: UnicodeEncodeError")
        ok = run_process([], timeout=10, spawn=lambda: pool.run("print('ok')", "<string>"))
        assert (ok.exit_code, ok.stdout) == (0, "ok\n")
    finally:
        pool.close()
