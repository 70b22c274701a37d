"""PYTHON_SCRIPT tasks forked from a warm zygote behave like a fresh `python -I -c SOURCE`."""

import threading

import pytest

from common.executors import ExecutorLimits, PythonScriptExecutor
from common.testing import eventually, process_alive
from common.testing.processes import KILL_MY_ZYGOTE
from common.testing.tasks import script_task


def test_stdout_stderr_and_exit_code_are_those_of_the_script(script_executor):
    out = script_executor.run(
        script_task("import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)")
    )
    assert out.exit_code == 3 and not out.success
    assert out.result == "out\n"
    # stdout to a pipe is block-buffered (flushed at exit), stderr is not, as in `python -c`.
    assert sorted(out.lines) == ["[stderr] err", "out"]
    assert out.error == "exit code 3: err"


@pytest.mark.parametrize(
    ("payload", "code", "stderr_tail"),
    [
        ("pass", 0, None),
        ("import sys; sys.exit()", 0, None),
        ("raise SystemExit(0)", 0, None),
        ("import sys; sys.exit(256 + 7)", 7, None),
        ("import sys; sys.exit('bad input')", 1, "bad input"),
    ],
)
def test_sys_exit_maps_to_the_exit_code_python_would_give(
    script_executor, payload, code, stderr_tail
):
    out = script_executor.run(script_task(payload))
    assert out.exit_code == code
    if stderr_tail:
        assert out.lines[-1] == f"[stderr] {stderr_tail}"


def test_an_uncaught_exception_prints_a_traceback_and_exits_1(script_executor):
    out = script_executor.run(script_task("x = 1\n1 / 0"))
    assert out.exit_code == 1 and not out.success
    assert "[stderr] Traceback (most recent call last):" in out.lines
    assert '  File "<string>", line 2, in <module>' in [line[9:] for line in out.lines]
    assert out.error == "exit code 1: ZeroDivisionError: division by zero"


def test_the_script_runs_as_main_in_a_session_of_its_own(script_executor):
    out = script_executor.run(
        script_task("import os, sys\nprint(__name__, os.getsid(0) == os.getpid(), sys.argv)")
    )
    assert out.result == "__main__ True ['-c']\n"


def test_each_task_gets_fresh_globals_and_the_zygote_is_reused(script_executor):
    first = script_executor.run(script_task("import os\nleak = 1\nprint(os.getppid())"))
    second = script_executor.run(script_task("import os\nprint('leak' in globals(), os.getppid())"))
    assert second.result == f"False {first.result.strip()}\n"


def test_a_timeout_kills_the_whole_process_group(script_executor, tmp_path):
    pidfile = tmp_path / "child.pid"
    script = (
        "import subprocess, time\n"
        "p = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    out = script_executor.run(script_task(script, timeout=1))
    assert out.timed_out and not out.success
    assert "timed out after 1s" in out.error
    child = int(pidfile.read_text())
    eventually(lambda: not process_alive(child), timeout=5, message="background child killed")


def test_a_cancel_kills_a_running_script(script_executor):
    calls = {"n": 0}

    def should_cancel():
        calls["n"] += 1
        return calls["n"] >= 2

    out = script_executor.run(
        script_task("import time\ntime.sleep(60)"), should_cancel=should_cancel
    )
    assert out.cancelled and not out.success


def test_output_is_capped_and_marked_truncated():
    ex = PythonScriptExecutor(ExecutorLimits(output_cap_bytes=1000))
    try:
        out = ex.run(script_task("print('x' * 100000)"))
    finally:
        ex.close()
    assert out.success
    assert out.result.endswith("[output truncated]")
    assert len(out.result) < 1100


def test_two_tasks_run_at_the_same_time(script_executor, tmp_path):
    # Each task waits (bounded) for the other's file: both succeed only if they overlap.
    def script(mine, theirs):
        return (
            "import os, sys, time\n"
            f"open({str(tmp_path / mine)!r}, 'w').close()\n"
            "for _ in range(1000):\n"
            f"    if os.path.exists({str(tmp_path / theirs)!r}):\n"
            "        print(os.getppid()); sys.exit(0)\n"
            "    time.sleep(0.01)\n"
            "sys.exit(2)\n"
        )

    results = {}

    def run(name, mine, theirs):
        results[name] = script_executor.run(script_task(script(mine, theirs)))

    threads = [
        threading.Thread(target=run, args=("a", "a", "b")),
        threading.Thread(target=run, args=("b", "b", "a")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results["a"].exit_code == 0 and results["b"].exit_code == 0
    # Two at once needs two zygotes: one zygote runs one task at a time.
    assert results["a"].result != results["b"].result


def test_a_script_that_kills_its_zygote_fails_and_the_next_task_still_runs(script_executor):
    out = script_executor.run(script_task(KILL_MY_ZYGOTE))
    assert not out.success
    assert "not started by a zygote" not in (out.error or "")
    assert script_executor.run(script_task("print('ok')")).result == "ok\n"


def test_without_warm_fork_a_fresh_interpreter_runs_the_script():
    ex = PythonScriptExecutor(warm_fork=False)
    out = ex.run(script_task("import sys\nprint(sys.flags.isolated)\nsys.exit(4)"))
    assert out.exit_code == 4 and out.result == "1\n"


def test_the_zygote_runs_isolated_like_python_dash_i(script_executor):
    out = script_executor.run(
        script_task("import sys\nprint(sys.flags.isolated, sys.path[0] != '')")
    )
    assert out.result == "1 True\n"
