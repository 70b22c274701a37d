"""Every `tasklab` error is one line on stderr and a non-zero exit code, never a traceback."""

import os
import subprocess
import sys

import pytest

from common import keys


def tasklab(args, redis_url, stdin=b"", **env):
    return subprocess.run(
        [sys.executable, "-m", "common.cli.main", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env={**os.environ, "TASKLAB_REDIS_URL": redis_url, **env},
    )


def assert_one_error_line(out, code=2):
    stderr = out.stderr.decode()
    assert out.returncode == code, stderr
    assert "Traceback" not in stderr
    [line] = stderr.splitlines()
    assert line.startswith("error: ")
    return line


@pytest.mark.parametrize(
    "stdin_encoding",
    [
        # Python's default on a POSIX locale: undecodable bytes become lone surrogates, which
        # fail later, when the payload is measured or sent.
        pytest.param("", id="surrogateescape"),
        # A strict stdin fails on the read itself.
        pytest.param("utf-8:strict", id="strict"),
    ],
)
def test_submit_of_stdin_that_is_not_utf8_is_one_error_line(
    redis_url, redis_client, stdin_encoding
):
    env = {"PYTHONIOENCODING": stdin_encoding} if stdin_encoding else {}
    out = tasklab(["submit", "-"], redis_url, stdin=b"echo \xff\xfe hi\n", **env)
    line = assert_one_error_line(out)
    assert "not valid UTF-8" in line
    assert redis_client.llen(keys.PENDING_QUEUE) == 0  # and nothing half-submitted


def test_submit_of_an_argument_that_is_not_utf8_is_one_error_line(redis_url, redis_client):
    out = subprocess.run(
        [sys.executable, "-m", "common.cli.main", "submit", b"echo \xff"],
        capture_output=True,
        timeout=60,
        env={**os.environ, "TASKLAB_REDIS_URL": redis_url},
    )
    assert "not valid UTF-8" in assert_one_error_line(out)
    assert redis_client.llen(keys.PENDING_QUEUE) == 0


def test_an_unreachable_redis_is_one_error_line_on_every_command():
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    for args in (["submit", "true"], ["list"], ["data", "cleanup", "--older-than", "1d"]):
        out = tasklab(args, "redis://127.0.0.1:1/0")
        assert "cannot reach Redis" in assert_one_error_line(out, code=1)


def test_submit_with_a_used_request_id_and_another_command_is_one_error_line(
    redis_url, redis_client
):
    first = tasklab(["submit", "--request-id", "cli-k", "echo one"], redis_url)
    again = tasklab(["submit", "--request-id", "cli-k", "echo one"], redis_url)
    task_id = first.stdout.decode().strip()
    assert first.returncode == 0 and again.stdout.decode().strip() == task_id
    out = tasklab(["submit", "--request-id", "cli-k", "echo two"], redis_url)
    line = assert_one_error_line(out, code=1)
    assert "cli-k" in line and task_id in line and "different request" in line
    assert redis_client.zcard(keys.TASK_INDEX) == 1
