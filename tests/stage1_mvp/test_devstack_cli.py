"""`tasklab dev up/down`: real services in the background, addresses as exportable lines."""

import subprocess
import sys

import redis

from common.testing import process_alive


def tasklab(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_dev_up_prints_exportable_addresses_and_dev_down_stops_exactly_those_pids(tmp_path):
    state = str(tmp_path / "stack")
    up = tasklab("dev", "up", "--stage", "1", "--state-dir", state)
    assert up.returncode == 0, up.stderr
    lines = up.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("TASKLAB_REDIS_URL=redis://127.0.0.1:")
    url = lines[0].split("=", 1)[1]
    assert redis.Redis.from_url(url).ping()
    status = tasklab("dev", "status", "--state-dir", state)
    pid = int(status.stdout.split()[2])
    assert "running" in status.stdout and process_alive(pid)

    again = tasklab("dev", "up", "--stage", "1", "--state-dir", state)
    assert again.stdout == up.stdout  # already up: same service, nothing new started

    down = tasklab("dev", "down", "--state-dir", state)
    assert down.stdout.strip() == f"stopped redis (pid {pid})"
    assert not process_alive(pid)


def test_dev_up_rejects_an_unknown_stage_in_one_line(tmp_path):
    out = tasklab("dev", "up", "--stage", "9", "--state-dir", str(tmp_path))
    assert out.returncode == 2
    error = out.stderr.strip()
    assert error.startswith("error: stage 9 is not installed (installed stages: 1, 2, 3")
    assert "\n" not in error
