"""A task that leaves its process group (setsid, a daemon's double fork) still dies with it.

On the warm-fork path the zygote is a child subreaper: whatever a task leaves behind is
reparented to it, not to init, and killed when the attempt ends (timeout, cancel, or a normal
exit). Each test records the pids of the escaped processes in a file and checks each one by
pid, in /proc, within two seconds.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from common.domain.task import Task, TaskSpec, TaskType
from common.executors import ExecutorLimits, default_factory
from common.testing import eventually, process_alive

LIMITS = ExecutorLimits(kill_grace_seconds=0.3)


# A setsid'd child of the shell, and a daemon whose parent exits at once (`( ... &)`: the
# subshell is gone before the kill, so only a subreaper still has the daemon below it).
SHELL_ESCAPES = (
    "setsid sleep 300 & echo $! >> {pids}\n"
    "(setsid sh -c 'echo $$ >> {pids}; sleep 300 & echo $! >> {pids}; wait' &)\n"
    "while [ $(wc -l < {pids}) -lt 3 ]; do sleep 0.01; done\n"
    "{after}"
)

# fork, setsid, fork again, the middle process exits: the classic daemon.
PYTHON_ESCAPES = (
    "import os, time\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        with open({pids!r}, 'a') as fh:\n"
    "            fh.write(f'{{os.getpid()}}\\n')\n"
    "        time.sleep(300)\n"
    "    os._exit(0)\n"
    "os.waitpid(pid, 0)\n"
    "while not open({pids!r}).read():\n"
    "    time.sleep(0.01)\n"
    "{after}"
)


def payload(task_type, pids, after):
    template = SHELL_ESCAPES if task_type == TaskType.SHELL else PYTHON_ESCAPES
    return template.format(pids=str(pids), after=after)


@pytest.fixture
def factory():
    factory = default_factory(LIMITS)
    yield factory
    factory.close()


def escaped(pids_file, expected):
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == expected, pids
    return pids


def assert_all_gone(pids):
    eventually(
        lambda: not [pid for pid in pids if process_alive(pid)],
        timeout=2,
        message=f"escaped descendants {pids} killed",
    )


def cancel_once_escaped(pids_file, count):
    """A cancel that comes once every escapee is known: it tests the kill, not the timing."""
    return lambda: len(pids_file.read_text().split()) >= count


TYPES = pytest.mark.parametrize(
    ("task_type", "sleep", "count"),
    [
        (TaskType.SHELL, "sleep 300\n", 3),
        (TaskType.PYTHON_SCRIPT, "time.sleep(300)\n", 1),
    ],
    ids=["shell", "python"],
)


@TYPES
def test_on_timeout_every_descendant_that_left_the_group_is_killed(
    factory, tmp_path, task_type, sleep, count
):
    pids = tmp_path / "pids"
    pids.touch()
    spec = TaskSpec(
        task_type=task_type, payload=payload(task_type, pids, sleep), execution_timeout=3
    )

    out = factory.create(task_type).run(Task.new(spec))

    assert out.timed_out and not out.success
    assert_all_gone(escaped(pids, count))


@TYPES
def test_on_cancel_every_descendant_that_left_the_group_is_killed(
    factory, tmp_path, task_type, sleep, count
):
    pids = tmp_path / "pids"
    pids.touch()
    spec = TaskSpec(
        task_type=task_type, payload=payload(task_type, pids, sleep), execution_timeout=60
    )

    out = factory.create(task_type).run(
        Task.new(spec), should_cancel=cancel_once_escaped(pids, count)
    )

    assert out.cancelled and not out.success
    assert_all_gone(escaped(pids, count))


@TYPES
def test_after_a_normal_exit_daemonized_leftovers_are_killed(
    factory, tmp_path, task_type, sleep, count
):
    pids = tmp_path / "pids"
    pids.touch()
    done = "echo done\n" if task_type == TaskType.SHELL else "print('done')\n"
    spec = TaskSpec(task_type=task_type, payload=payload(task_type, pids, done))

    out = factory.create(task_type).run(Task.new(spec))

    assert out.success and out.result == "done\n", out.error
    assert_all_gone(escaped(pids, count))


def test_a_zygote_reaps_orphans_that_end_while_its_task_still_runs(factory):
    # Orphans reparented to the subreaper must not pile up as zombies during a long task:
    # the task itself looks, two reap intervals later, whether their /proc entries are gone.
    script = (
        "pids=''\n"
        "for i in 1 2 3; do pids=\"$pids $(sh -c 'sleep 0.1 & echo $!')\"; done\n"
        "sleep 2.5\n"
        'for p in $pids; do [ -e /proc/$p ] && echo "left $p"; done\n'
        "echo checked\n"
    )
    spec = TaskSpec(task_type=TaskType.SHELL, payload=script, execution_timeout=30)

    out = factory.create(TaskType.SHELL).run(Task.new(spec))

    assert out.success, out.error
    assert out.result == "checked\n"


def test_without_warm_fork_a_setsid_child_of_a_running_task_is_killed_on_timeout(tmp_path):
    # No zygote, so no subreaper: the agent walks the live leader's descendants in /proc at
    # the kill. (A daemon whose parent already exited is out of its reach: see the docs.)
    pids = tmp_path / "pids"
    script = f"setsid sleep 300 & echo $! > {pids}; sleep 300"
    executor = default_factory(LIMITS, warm_fork=False).create(TaskType.SHELL)
    spec = TaskSpec(task_type=TaskType.SHELL, payload=script, execution_timeout=1)

    out = executor.run(Task.new(spec))

    assert out.timed_out
    assert_all_gone(escaped(pids, 1))


def test_an_agent_killed_minus_9_takes_its_task_and_the_task_escapees_with_it(tmp_path):
    # The "agent" is a child Python process running one task through a zygote; the zygote
    # sees the agent's socket close and kills the task, and as subreaper, what escaped it.
    pids = tmp_path / "pids"
    pids.touch()
    script = f"echo $$ > {pids}; setsid sleep 300 & echo $! >> {pids}; sleep 300"
    agent_code = (
        "from common.domain.task import Task, TaskSpec, TaskType\n"
        "from common.executors import default_factory\n"
        f"spec = TaskSpec(task_type=TaskType.SHELL, payload={script!r}, execution_timeout=60)\n"
        "default_factory().create(TaskType.SHELL).run(Task.new(spec))\n"
    )
    root = Path(__file__).resolve().parents[2]
    agent = subprocess.Popen([sys.executable, "-c", agent_code], cwd=root)
    try:
        task_pids = eventually(
            lambda: len(pids.read_text().split()) == 2 and pids.read_text().split(),
            timeout=15,
            message="task started",
        )
        os.kill(agent.pid, signal.SIGKILL)
    finally:
        agent.kill()
        agent.wait()

    assert_all_gone([int(pid) for pid in task_pids])
