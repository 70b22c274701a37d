"""`tasklab dev restart NAME`: the runbook's "the broker went away and came back", by hand.

Shown on Redis, which starts in milliseconds; the broker goes through the same code, and the
broker restart test (test_stage3_broker_restart.py) restarts a real Kafka under load.
"""

import os
import signal
import subprocess
import sys

import redis

from common.testing import eventually, process_alive


def tasklab(*args):
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dev_restart_brings_a_killed_service_back_on_its_port_with_its_data(tmp_path):
    # Given a dev stack whose Redis holds a key (AOF on, so it survives a kill -9)
    state = str(tmp_path / "stack")
    up = tasklab("dev", "up", "--stage", "1", "--state-dir", state)
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip().split("=", 1)[1]
    client = redis.Redis.from_url(url)
    client.set("kept", "yes")
    client.execute_command("BGREWRITEAOF")
    eventually(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 10)
    old_pid = int(tasklab("dev", "status", "--state-dir", state).stdout.split()[2])
    try:
        # When it is killed -9, then restarted
        os.killpg(old_pid, signal.SIGKILL)
        eventually(lambda: not process_alive(old_pid), 10, message="killed")
        restarted = tasklab("dev", "restart", "redis", "--state-dir", state)

        # Then it answers at the same address, with its data, under a new PID
        assert restarted.returncode == 0, restarted.stderr
        port = url.rsplit(":", 1)[1].split("/")[0]
        assert restarted.stdout.startswith("restarted redis: pid ")
        assert restarted.stdout.strip().endswith(f"127.0.0.1:{port}")
        assert redis.Redis.from_url(url).get("kept") == b"yes"
    finally:
        tasklab("dev", "down", "--state-dir", state)


def test_dev_restart_of_a_service_the_stack_does_not_run_is_one_line(tmp_path):
    state = str(tmp_path / "stack")
    assert tasklab("dev", "up", "--stage", "1", "--state-dir", state).returncode == 0
    try:
        out = tasklab("dev", "restart", "kafka", "--state-dir", state)
        assert out.returncode == 2
        assert out.stderr.strip() == "error: no kafka in this dev stack (running: redis)"
    finally:
        tasklab("dev", "down", "--state-dir", state)
