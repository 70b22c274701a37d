"""Every role's JSON lines in a real VictoriaLogs, read back with `tasklab logs --all`; the
store killed -9 and restarted under a role that keeps logging; an unusable TASKLAB_LOGS_URL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from observability_support import scrape, wait_ready

from common.adapters.redis_client import redis_client
from common.adapters.redis_store import RedisTaskStore
from common.cli.logstore import query_store
from common.client import TaskClient
from common.devstack.base import free_port, pid_alive
from common.devstack.victorialogs import VictoriaLogsService
from common.testing import eventually

pytestmark = pytest.mark.integration


def tasklab(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def stored_lines(url: str, task_id: str) -> list[dict]:
    result = tasklab("logs", "--all", "--task", task_id, "--json", env={"TASKLAB_LOGS_URL": url})
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def lines_about(url: str, task_ids: list[str]) -> list[dict]:
    """The stored lines about any of `task_ids`, in one query from this process (the CLI is
    tested on its own above; here a probe runs many times)."""
    quoted = ",".join(json.dumps(t) for t in task_ids)
    return query_store(url, f"taskId:in({quoted})")


def run_tasks(redis_url: str, count: int) -> list[str]:
    tasks = TaskClient(RedisTaskStore(redis_client(redis_url)))
    ids = [tasks.submit({"taskType": "SHELL", "payload": "true"})[0].task_id for _ in range(count)]
    for task_id in ids:
        assert tasks.wait(task_id, 30).status.value == "SUCCESS"
    return ids


def shipping_env(url: str, **extra: str) -> dict[str, str]:
    # Fast flushes, so a test waits a fraction of a second rather than the 1 s default.
    return {"TASKLAB_LOGS_URL": url, **extra}


@pytest.fixture
def stage2_env(redis_url, zookeeper_service, zk_chroot) -> dict[str, str]:
    return {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_ZK_CHROOT": zk_chroot, **zookeeper_service.env}


def test_one_tasks_lines_from_the_scheduler_and_the_agent_come_back_in_time_order(
    observed_role, stage2_env, victorialogs_service
):
    # Given a stage 2 scheduler and agent shipping their logs to a real VictoriaLogs
    url = victorialogs_service.env["TASKLAB_LOGS_URL"]
    env = {**stage2_env, **shipping_env(url)}
    scheduler, scheduler_address = observed_role("scheduler", 2, env, "scheduler-logs")
    agent, agent_address = observed_role("agent", 2, env, "agent-logs")
    wait_ready(scheduler, scheduler_address)
    wait_ready(agent, agent_address)

    # When a task runs
    (task_id,) = run_tasks(stage2_env["TASKLAB_REDIS_URL"], 1)

    # Then `tasklab logs --all --task ID` finds its lines from both roles, oldest first
    def both_roles() -> list[dict]:
        lines = stored_lines(url, task_id)
        assert {line["role"] for line in lines} >= {"scheduler", "agent"}, lines
        return lines

    lines = eventually(both_roles, 20, 0.3, message="the task's lines from two roles")
    assert all(line["taskId"] == task_id for line in lines)
    assert [line["ts"] for line in lines] == sorted(line["ts"] for line in lines)
    placed = next(line for line in lines if line["role"] == "scheduler")
    assert placed["process"] == "scheduler-logs" and int(placed["epoch"]) > 0
    ran = next(line for line in lines if line["role"] == "agent" and "agentId" in line)
    assert ran["process"] == "agent-logs" and ran["agentId"] == "agent-logs"
    assert ran["attempt"] == "1" and int(ran["epoch"]) == int(placed["epoch"])
    assert {"ts", "level", "logger", "msg"} <= set(ran)

    # ...the readable form is one line each: time, process, level, message
    text = tasklab("logs", "--all", "--task", task_id, env={"TASKLAB_LOGS_URL": url})
    assert text.returncode == 0, text.stderr
    printed = text.stdout.splitlines()
    assert len(printed) == len(lines)
    assert any("agent-logs" in p and " INFO " in p and "task SUCCESS in" in p for p in printed)

    # ...--role keeps one role's lines, and the agent counted what it shipped
    only_agent = tasklab(
        "logs", "--all", "--task", task_id, "--role", "agent", "--since", "10m", "--json",
        env={"TASKLAB_LOGS_URL": url},
    )  # fmt: skip
    roles = {json.loads(line)["role"] for line in only_agent.stdout.splitlines()}
    assert roles == {"agent"}
    assert scrape(agent_address).value("tasklab_log_lines_shipped_total") > 0


def test_a_store_killed_and_restarted_gets_the_lines_logged_while_it_was_away(
    observed_role, redis_url, tmp_path: Path
):
    # Given a stage 1 agent shipping to a VictoriaLogs of this test's own, with a small bound:
    # at most 10 queued lines and a held batch of 5 wait for the store
    service = VictoriaLogsService()
    store = service.start(tmp_path / "vlogs")
    url = store.env["TASKLAB_LOGS_URL"]
    try:
        env = {
            "TASKLAB_REDIS_URL": redis_url,
            **shipping_env(url, TASKLAB_LOGS_QUEUE_LINES="10", TASKLAB_LOGS_BATCH_LINES="5"),
        }
        agent, address = observed_role("agent", 1, env, "agent-outage")
        wait_ready(agent, address)
        (before,) = run_tasks(redis_url, 1)
        eventually(lambda: lines_about(url, [before]), 20, 0.3, message="shipping works")

        # When the store is killed -9 while the agent runs two tasks, and comes back
        os.killpg(store.pid, signal.SIGKILL)
        eventually(lambda: not pid_alive(store.pid), 10, message="the store is gone")
        during = run_tasks(redis_url, 2)
        assert agent.alive()
        store = service.restart(store)

        # Then the lines it logged meanwhile arrive, and nothing was dropped
        eventually(
            lambda: {line["taskId"] for line in lines_about(url, during)} == set(during),
            30,
            0.5,
            message="the lines of both tasks",
        )
        assert scrape(address).value("tasklab_log_lines_dropped_total", reason="queue_full") == 0

        # When it is away again while more lines are logged than the bound holds
        os.killpg(store.pid, signal.SIGKILL)
        eventually(lambda: not pid_alive(store.pid), 10, message="the store is gone")
        flood = run_tasks(redis_url, 25)
        assert agent.alive()
        store = service.restart(store)

        # Then the role ran on, some of those lines arrive, and the drops counter says how
        # many did not: what arrived and what was dropped cover every line the agent wrote
        # about those tasks (the drops may include lines about nothing in particular).
        def accounted() -> tuple[int, float]:
            written = sum(agent.log_text().count(task_id) for task_id in flood)
            dropped = scrape(address).value("tasklab_log_lines_dropped_total", reason="queue_full")
            arrived = len(lines_about(url, flood))
            assert arrived + dropped >= written, (arrived, dropped, written)
            return arrived, dropped

        arrived, dropped = eventually(accounted, 30, 0.5, message="every line accounted for")
        assert dropped > 0
        assert 0 < arrived <= 15
    finally:
        service.stop(store)


def test_an_unusable_logs_url_is_one_clear_line_and_the_role_runs_on(observed_role, redis_url):
    # Given an agent with a URL that is no URL, and one whose host does not exist
    bad, bad_address = observed_role(
        "agent", 1, {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_LOGS_URL": "logs-store:9428"},
        "agent-bad-url",
    )  # fmt: skip
    unknown, unknown_address = observed_role(
        "agent", 1,
        {"TASKLAB_REDIS_URL": redis_url, "TASKLAB_LOGS_URL": "http://logs.invalid:9428"},
        "agent-unknown-host",
    )  # fmt: skip
    wait_ready(bad, bad_address)
    wait_ready(unknown, unknown_address)

    # When tasks run
    run_tasks(redis_url, 4)

    # Then both still run, and each said once, in one line, why its lines stay on stderr
    assert bad.alive() and unknown.alive()
    eventually(
        lambda: "'logs-store:9428' is not an http://host:port URL" in bad.log_text(),
        10,
        message="the bad URL named",
    )
    eventually(
        lambda: unknown.log_text().count("cannot reach the log store at http://logs.invalid") == 1,
        10,
        message="the unreachable store named once",
    )


def test_tasklab_logs_all_says_in_one_line_when_there_is_no_store(tmp_path):
    # Given no TASKLAB_LOGS_URL, a malformed one, and one where nothing listens
    unset = tasklab("logs", "--all", "--task", "t1", env={"TASKLAB_LOGS_URL": ""})
    malformed = tasklab("logs", "--all", "--task", "t1", env={"TASKLAB_LOGS_URL": "nope"})
    nobody = f"http://127.0.0.1:{free_port()}"
    down = tasklab("logs", "--all", "--task", "t1", env={"TASKLAB_LOGS_URL": nobody})

    # Then each is one line and the CLI's exit codes: 2 for config, 1 for a store away
    assert unset.returncode == 2 and "TASKLAB_LOGS_URL is not set" in unset.stderr
    assert malformed.returncode == 2 and "is not an http://host:port URL" in malformed.stderr
    assert down.returncode == 1 and f"cannot reach the log store at {nobody}" in down.stderr
    for result in (unset, malformed, down):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
