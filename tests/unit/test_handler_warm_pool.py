"""HANDLER calls in warm workers (warm_worker.py): one process serves call after call, and a
call that kills, crashes or outlives its worker fails only its own task; the worker is replaced.

Real processes throughout (the agent's side is this test process): zygotes, workers, signals.
"""

import json
import os
import signal

import pytest

from common.domain.task import Task, TaskSpec, TaskType
from common.executors import ExecutorLimits
from common.executors.handler import HandlerExecutor
from common.testing import eventually, process_alive

EXAMPLES = "common.examples.handlers"
NAMES = (
    "add",
    "echo",
    "fail",
    "noop",
    "sleep",
    "whoami",
    "die",
    "leave_behind",
    "chatter",
    "fork_and_return",
)
REGISTERED = tuple(f"{EXAMPLES}:{name}" for name in NAMES)
LIMITS = ExecutorLimits(kill_grace_seconds=0.5)


def call(handler, timeout=20, **args):
    payload = json.dumps({"handler": f"{EXAMPLES}:{handler}", "args": args})
    spec = TaskSpec(task_type=TaskType.HANDLER, payload=payload, execution_timeout=timeout)
    return Task.new(spec)


def result(executor, handler, **args):
    out = executor.run(call(handler, **args))
    assert out.success, out.error
    return json.loads(out.result)


@pytest.fixture
def warm():
    ex = HandlerExecutor(LIMITS, handlers=REGISTERED)
    ex.warm(1)
    yield ex
    ex.close()


def idle_worker_pids(executor):
    return [worker.pid for worker in executor.workers._idle]


def test_calls_run_one_after_another_in_the_same_warm_worker_which_keeps_its_globals(warm):
    # Given a warm worker started with the executor
    (pid,) = idle_worker_pids(warm)
    # When three calls run
    seen = [result(warm, "whoami") for _ in range(3)]
    # Then the same process ran them all, not this one, and its module global counted them:
    # the state a warm worker shares between calls.
    assert [s["pid"] for s in seen] == [pid, pid, pid]
    assert pid != os.getpid()
    assert [s["calls"] for s in seen] == [1, 2, 3]


def test_in_fork_mode_each_call_gets_a_fresh_copy_of_the_zygote_and_shares_nothing():
    ex = HandlerExecutor(LIMITS, handlers=REGISTERED, mode="fork")
    try:
        seen = [result(ex, "whoami") for _ in range(3)]
    finally:
        ex.close()
    assert len({s["pid"] for s in seen}) == 3
    assert [s["calls"] for s in seen] == [1, 1, 1]


def test_a_timed_out_call_kills_its_worker_and_the_next_call_gets_a_new_one(warm, tmp_path):
    (pid,) = idle_worker_pids(warm)
    pidfile = tmp_path / "pid"
    out = warm.run(call("sleep", timeout=1, seconds=60, pidfile=str(pidfile)))
    assert out.timed_out and not out.success
    assert out.error == "timed out after 1s; process group killed"
    assert out.lines == ["[stderr] sleeping"]
    assert int(pidfile.read_text()) == pid
    eventually(lambda: not process_alive(pid), timeout=5, message="the worker was killed")
    after = result(warm, "whoami")
    assert after["pid"] != pid and after["calls"] == 1


def test_a_cancelled_call_kills_its_worker_and_the_next_call_gets_a_new_one(warm, tmp_path):
    (pid,) = idle_worker_pids(warm)
    pidfile = tmp_path / "pid"
    # Cancelled once the call has started (it writes its pid first thing).
    out = warm.run(
        call("sleep", seconds=60, pidfile=str(pidfile)),
        should_cancel=lambda: pidfile.exists() and bool(pidfile.read_text()),
    )
    assert out.cancelled and not out.success
    eventually(lambda: not process_alive(pid), timeout=5, message="the worker was killed")
    assert result(warm, "whoami")["pid"] != pid


@pytest.mark.parametrize(
    ("how", "reason"),
    [("exit", "exit code 3"), ("kill", "killed by signal 9")],
)
def test_a_handler_that_ends_its_own_process_fails_only_its_task_and_the_worker_is_replaced(
    warm, how, reason
):
    (pid,) = idle_worker_pids(warm)
    out = warm.run(call("die", how=how))
    assert not out.success
    assert out.error == (
        f"the warm worker running the handler died during the call ({reason}); replaced"
    )
    after = result(warm, "whoami")
    assert after["pid"] != pid and after["calls"] == 1


def test_a_handler_that_raises_fails_with_its_traceback_and_the_worker_serves_the_next(warm):
    (pid,) = idle_worker_pids(warm)
    out = warm.run(call("fail", message="boom"))
    assert out.error == "exit code 1: ValueError: boom"
    assert out.lines[0] == "[stderr] Traceback (most recent call last):"
    assert out.lines[-1] == "[stderr] ValueError: boom"
    assert result(warm, "whoami")["pid"] == pid


def test_each_calls_prints_are_its_own_log_even_past_the_log_limit(tmp_path):
    ex = HandlerExecutor(ExecutorLimits(max_log_lines=5), handlers=REGISTERED)
    try:
        flood = ex.run(call("chatter", lines=100))
        quiet = ex.run(call("echo", message="hi"))
    finally:
        ex.close()
    assert flood.success and json.loads(flood.result) == 100
    assert flood.lines == [f"[stderr] line {n}" for n in range(5)]
    # Nothing of the flood reaches the next call's log, though the same worker ran both.
    assert quiet.lines == ["[stderr] echo: hi"]


@pytest.mark.parametrize("detach", [False, True], ids=["in-its-group", "setsid"])
def test_what_a_call_leaves_running_is_killed_when_it_answers_and_the_worker_lives_on(warm, detach):
    (pid,) = idle_worker_pids(warm)
    leftover = result(warm, "leave_behind", detach=detach)
    # Killed before the worker answered: nothing of the call outlives its attempt.
    eventually(lambda: not process_alive(leftover), timeout=5, message="the leftover was killed")
    assert result(warm, "whoami")["pid"] == pid


def test_a_child_the_handler_forked_and_that_returns_ends_there_and_never_answers(warm):
    (pid,) = idle_worker_pids(warm)
    # Both processes return from the function: only the worker's return is the result, and
    # the child does not answer the agent (a second answer would be read as the next call's).
    for _ in range(3):
        assert result(warm, "fork_and_return") == {"child": False}
    assert result(warm, "whoami")["pid"] == pid


def test_a_worker_that_died_while_idle_is_replaced_before_a_call_is_sent_to_it(warm):
    (pid,) = idle_worker_pids(warm)
    os.kill(pid, signal.SIGKILL)
    eventually(lambda: not process_alive(pid), timeout=5, message="the idle worker died")
    # The call is not lost on the dead worker: a new one takes it.
    assert result(warm, "add", a=1, b=2) == {"sum": 3}
    assert idle_worker_pids(warm) != [pid]


def test_a_worker_is_recycled_after_max_calls_and_its_successor_starts_afresh():
    ex = HandlerExecutor(LIMITS, handlers=REGISTERED, max_calls=2)
    try:
        seen = [result(ex, "whoami") for _ in range(5)]
    finally:
        ex.close()
    pids = [s["pid"] for s in seen]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]
    assert [s["calls"] for s in seen] == [1, 2, 1, 2, 1]
    eventually(lambda: not process_alive(pids[0]), timeout=5, message="the retired worker ended")


def test_closing_the_executor_ends_its_workers_and_their_zygotes(warm):
    (worker,) = warm.workers._idle
    warm.close()
    for pid in (worker.pid, worker.zygote.proc.pid):
        eventually(lambda pid=pid: not process_alive(pid), timeout=5, message=f"{pid} ended")


def test_an_unknown_handler_mode_is_refused():
    with pytest.raises(ValueError, match="handler mode must be one of"):
        HandlerExecutor(LIMITS, handlers=REGISTERED, mode="inline")
