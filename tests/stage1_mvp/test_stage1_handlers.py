"""Stage 1 on real Redis: HANDLER tasks call a registered function in a warm pool process.

The test profile (config/test.toml) registers the functions of common/examples/handlers.py.
"""

import json
import os
import signal
import subprocess
import sys

from common import keys
from common.domain.transitions import TaskStatus
from common.executors.zygote_server import descendants
from common.testing import eventually, process_alive

HANDLERS = "common.examples.handlers"


def call(handler, timeout=60, **args):
    return {
        "taskType": "HANDLER",
        "payload": json.dumps({"handler": f"{HANDLERS}:{handler}", "args": args}),
        "executionTimeout": timeout,
    }


def terminal(client, task_id):
    return eventually(
        lambda: (t := client.get(task_id)).is_terminal and t,
        timeout=20,
        message=f"task {task_id} terminal",
    )


def pid_in(path):
    return eventually(
        lambda: path.exists() and path.read_text() and int(path.read_text()),
        timeout=10,
        message="the handler wrote its pid",
    )


def test_a_handler_task_returns_the_function_result_as_json_and_its_prints_as_logs(client, agent):
    agent()
    added, _ = client.submit(call("add", a=2, b=3))
    echoed, _ = client.submit(call("echo", message="hi"))
    done = terminal(client, added.task_id)
    assert (done.status, done.task_name) == (TaskStatus.SUCCESS, f"{HANDLERS}:add")
    assert json.loads(done.result) == {"sum": 5}
    done = terminal(client, echoed.task_id)
    assert done.status == TaskStatus.SUCCESS
    # The result is the return value only; what the function printed is in the log.
    assert json.loads(done.result) == "hi"
    assert client.store.logs(echoed.task_id) == ["[stderr] echo: hi"]


def test_a_handler_that_raises_ends_failed_with_the_tracebacks_last_line(client, agent):
    agent()
    task, _ = client.submit(call("fail", message="no such order"))
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.FAILED
    assert done.error == "exit code 1: ValueError: no such order"
    assert client.store.logs(task.task_id)[0] == "[stderr] Traceback (most recent call last):"


def test_a_handler_past_its_timeout_is_killed_and_the_pool_runs_the_next_task(
    client, agent, tmp_path
):
    role = agent()
    pidfile = tmp_path / "handler.pid"
    task, _ = client.submit(call("sleep", timeout=1, seconds=120, pidfile=str(pidfile)))
    pid = pid_in(pidfile)
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.FAILED
    assert done.error == "timed out after 1s; process group killed"
    eventually(lambda: not process_alive(pid), timeout=5, message="the handler's process died")
    # It ran in a pool process, not in the agent, which lives on and serves the next call in
    # a new worker: the killed one is replaced.
    assert pid != role.pid and role.alive()
    follow, _ = client.submit(call("whoami"))
    assert json.loads(terminal(client, follow.task_id).result)["pid"] not in (pid, role.pid)


def test_cancelling_a_running_handler_kills_its_process(client, agent, tmp_path):
    agent()
    pidfile = tmp_path / "handler.pid"
    task, _ = client.submit(call("sleep", seconds=120, pidfile=str(pidfile)))
    pid = pid_in(pidfile)
    eventually(lambda: client.get(task.task_id).status == TaskStatus.RUNNING, message="running")
    assert client.cancel(task.task_id).accepted
    eventually(lambda: not process_alive(pid), timeout=5, message="the handler was killed")
    eventually(
        lambda: client.store.client.llen(keys.processing("agent-1")) == 0,
        timeout=5,
        message="agent dropped the cancelled task",
    )
    assert client.get(task.task_id).status == TaskStatus.CANCELLED
    follow, _ = client.submit(call("whoami"))
    done = terminal(client, follow.task_id)
    assert done.status == TaskStatus.SUCCESS
    assert json.loads(done.result)["pid"] != pid


def test_a_handler_the_agent_does_not_register_ends_failed_and_the_agent_lives_on(client, agent):
    role = agent()
    task, _ = client.submit(
        {"taskType": "HANDLER", "payload": '{"handler": "os:system", "args": {"command": "id"}}'}
    )
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.FAILED
    assert done.error.startswith("unknown handler 'os:system': not registered with this agent")
    assert role.alive()
    follow, _ = client.submit(call("add", a=0, b=0))
    assert terminal(client, follow.task_id).status == TaskStatus.SUCCESS


def test_run_agent_refuses_a_handler_that_cannot_be_imported_in_one_line(redis_url):
    env = {
        "PATH": "/usr/bin:/bin",
        "TASKLAB_ENV": "test",
        "TASKLAB_REDIS_URL": redis_url,
        "TASKLAB_AGENT_HANDLERS": json.dumps([f"{HANDLERS}:add", f"{HANDLERS}:missing"]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "run", "agent", "--stage", "1"],
        env={**env, "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: agent_handlers: cannot load {HANDLERS}:missing: AttributeError: "
        f"module '{HANDLERS}' has no attribute 'missing'"
    )


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


def test_calls_run_one_after_another_in_one_warm_worker_of_the_agents_pool(client, agent):
    role = agent()
    seen = []
    for _ in range(3):
        task, _ = client.submit(call("whoami"))
        done = terminal(client, task.task_id)
        assert done.status == TaskStatus.SUCCESS
        seen.append(json.loads(done.result))
    pid = seen[0]["pid"]
    # One process served the three calls, and kept its module global between them.
    assert [s["pid"] for s in seen] == [pid] * 3
    assert [s["calls"] for s in seen] == [1, 2, 3]
    # It is the agent's pool process (a child of one of its zygotes), not the agent itself.
    assert parent_of(parent_of(pid)) == role.pid


def test_with_handler_mode_fork_every_call_runs_in_a_process_of_its_own(client, agent):
    agent(agent_handler_mode="fork")
    seen = []
    for _ in range(2):
        task, _ = client.submit(call("whoami"))
        seen.append(json.loads(terminal(client, task.task_id).result))
    assert seen[0]["pid"] != seen[1]["pid"]
    assert [s["calls"] for s in seen] == [1, 1]


def test_a_handler_that_kills_its_own_process_fails_only_its_task(client, agent):
    role = agent()
    first, _ = client.submit(call("whoami"))
    pid = json.loads(terminal(client, first.task_id).result)["pid"]
    task, _ = client.submit(call("die", how="kill"))
    done = terminal(client, task.task_id)
    assert done.status == TaskStatus.FAILED
    assert done.error == (
        "the warm worker running the handler died during the call (killed by signal 9); replaced"
    )
    assert role.alive()
    follow, _ = client.submit(call("whoami"))
    after = json.loads(terminal(client, follow.task_id).result)
    assert after["pid"] != pid and after["calls"] == 1


def test_an_agent_killed_9_mid_call_leaves_no_pool_process_behind(client, agent, tmp_path):
    role = agent()
    pidfile = tmp_path / "handler.pid"
    client.submit(call("sleep", seconds=120, pidfile=str(pidfile)))
    worker = pid_in(pidfile)
    pool = descendants([role.pid])[1:]  # its zygotes and the worker running the call
    assert worker in pool and len(pool) >= 2
    os.kill(role.pid, signal.SIGKILL)
    role.proc.wait(10)
    for pid in pool:
        eventually(lambda pid=pid: not process_alive(pid), timeout=10, message=f"{pid} ended")
