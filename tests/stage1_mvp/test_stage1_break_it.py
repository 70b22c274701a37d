"""The stage 1 README's "Break it" experiments, as tests: kill -9 an agent mid-task.

First the naive BRPOP agent, which loses the task; then the reliable claim (BLMOVE to a
processing list + reaper), which loses none.
"""

import pytest

from common import keys
from common.domain.transitions import TaskStatus
from common.testing import eventually, process_alive

SLOW = {"taskType": "SHELL", "payload": "echo started; sleep 2; echo finished"}


# --8<-- [start:naive]
def test_the_naive_brpop_agent_loses_a_task_when_it_is_killed_mid_task(redis_client, client, agent):
    # Given a naive agent running a task
    victim = agent("naive-1", claim="naive")
    task, _ = client.submit(SLOW)
    eventually(lambda: client.get(task.task_id).status == TaskStatus.RUNNING, message="running")
    # When it is killed -9, and a healthy agent joins
    victim.kill()
    agent("naive-2", claim="naive")
    follow, _ = client.submit({"taskType": "SHELL", "payload": "echo later"})
    eventually(
        lambda: client.get(follow.task_id).status == TaskStatus.SUCCESS,
        message="the next task runs",
    )
    # Then the task is gone: not queued anywhere, stuck RUNNING for ever.
    assert client.get(task.task_id).status == TaskStatus.RUNNING
    assert redis_client.llen(keys.PENDING_QUEUE) == 0
    assert not redis_client.keys("processing:*")


# --8<-- [end:naive]


# --8<-- [start:reliable]
def test_the_reliable_agent_loses_nothing_when_killed_mid_task(redis_client, client, agent):
    # Given a reliable agent running a task (short heartbeat TTL from config/test.toml)
    victim = agent("reliable-1")
    task, _ = client.submit(SLOW)
    eventually(lambda: client.get(task.task_id).status == TaskStatus.RUNNING, message="running")
    assert redis_client.llen(keys.processing("reliable-1")) == 1
    # When it is killed -9 and another agent is alive
    victim.kill()
    agent("reliable-2")
    # Then the reaper re-queues it once the heartbeat expires, and it completes on attempt 2
    done = eventually(
        lambda: (t := client.get(task.task_id)).is_terminal and t,
        timeout=20,
        message="task completed after the kill",
    )
    assert done.status == TaskStatus.SUCCESS
    assert done.attempt == 2
    assert done.agent_id == "reliable-2"
    states = [(h["state"], h["attempt"], h["actor"]) for h in client.store.history(task.task_id)]
    assert states[1:] == [
        ("RUNNING", 1, "reliable-1"),
        ("PENDING", 2, "reaper:reliable-2"),
        ("RUNNING", 2, "reliable-2"),
        ("SUCCESS", 2, "reliable-2"),
    ]
    assert redis_client.llen(keys.processing("reliable-1")) == 0


# --8<-- [end:reliable]


def test_an_agent_restarted_under_the_same_id_does_not_resume_its_old_attempt(
    redis_client, client, agent
):
    # Given an agent killed mid-task with no other agent to reap it
    victim = agent("same-id")
    task, _ = client.submit(SLOW)
    eventually(lambda: client.get(task.task_id).status == TaskStatus.RUNNING, message="running")
    victim.kill()
    # When it comes back under the same id (before its heartbeat expired)
    agent("same-id")
    # Then its old work is re-queued as a new attempt and run again from the start
    done = eventually(
        lambda: (t := client.get(task.task_id)).is_terminal and t,
        timeout=20,
        message="task completed",
    )
    assert (done.status, done.attempt) == (TaskStatus.SUCCESS, 2)
    assert client.store.logs(task.task_id) == ["started", "finished"]


# --8<-- [start:zombie]
def test_a_zombie_agents_late_report_never_overwrites_the_re_run(redis_client, client, agent):
    # Given an agent paused (SIGSTOP) mid-task for longer than its heartbeat TTL
    zombie = agent("zombie")
    task, _ = client.submit({"taskType": "SHELL", "payload": "sleep 1; echo zombie-was-here"})
    eventually(lambda: client.get(task.task_id).status == TaskStatus.RUNNING, message="running")
    zombie.pause()
    agent("healthy")
    # When the healthy agent re-runs the task and then the zombie wakes up
    done = eventually(
        lambda: (t := client.get(task.task_id)).is_terminal and t,
        timeout=20,
        message="re-run finished",
    )
    zombie.resume()
    # Then the zombie learns it was superseded (and writes nothing), or, if its task's exit
    # came first, its report for attempt 1 is rejected and counted; the re-run's result stands
    eventually(
        lambda: (
            "superseded by attempt 2" in zombie.log_text()
            or "report rejected as stale_attempt" in zombie.log_text()
        ),
        timeout=10,
        message="zombie superseded or its report rejected",
    )
    final = client.get(task.task_id)
    assert (final.status, final.attempt, final.agent_id) == (TaskStatus.SUCCESS, 2, "healthy")
    assert final.updated_at == done.updated_at
    if "report rejected" in zombie.log_text():
        assert client.store.stats().get("rejected_stale_attempt", 0) >= 1


# --8<-- [end:zombie]


@pytest.mark.parametrize(
    "task_type, payload",
    [
        ("SHELL", "sleep 300 & echo $! > {bg}; echo $$ > {pid}; sleep 300"),
        (
            "PYTHON_SCRIPT",
            "import os, subprocess, time\n"
            "bg = subprocess.Popen(['sleep', '300'])\n"
            "open({bg!r}, 'w').write(str(bg.pid))\n"
            "open({pid!r}, 'w').write(str(os.getpid()))\n"
            "time.sleep(300)\n",
        ),
    ],
)
def test_a_running_task_and_its_children_die_with_an_agent_killed_9(
    client, agent, tmp_path, task_type, payload
):
    # Given an agent running a task that started a background child
    victim = agent("doomed")
    pid_file, bg_file = tmp_path / "task.pid", tmp_path / "bg.pid"
    task, _ = client.submit(
        {"taskType": task_type, "payload": payload.format(pid=str(pid_file), bg=str(bg_file))}
    )
    eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), message="task started")
    eventually(lambda: bg_file.exists() and bg_file.read_text().strip(), message="child started")
    task_pid, bg_pid = int(pid_file.read_text()), int(bg_file.read_text())
    assert process_alive(task_pid) and process_alive(bg_pid)
    # When the agent is killed -9
    victim.kill()
    # Then the task's whole process group dies too: no orphan runs on beside the next attempt
    eventually(lambda: not process_alive(task_pid), timeout=5, message="task process killed")
    eventually(lambda: not process_alive(bg_pid), timeout=5, message="background child killed")
