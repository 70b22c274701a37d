"""The roles' Redis pool (common/adapters/redis_client.py) on real Redis: replies parsed by
hiredis, commands packed in Python.

The two halves have each a reason to be checked here. hiredis must answer every reply the
code relies on exactly as redis-py's Python parser did (types, nil, nested script replies,
the error classes `except` clauses and `isinstance` checks name); and the Python packer must
still write back a value that is not UTF-8, byte for byte, which redis-py's C packer refuses.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
from redis import Redis
from redis._parsers import _HiredisParser, _RESP3Parser
from redis.connection import PythonRespSerializer
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common import keys
from common.adapters.redis_client import as_text, new_redis_client, redis_client
from common.adapters.redis_store import RedisTaskStore
from common.client import TaskClient
from common.devstack.redis import RedisService

pytestmark = pytest.mark.integration

NOT_UTF8 = b"\xff\xfe not json \x80"
MESSAGES = "messages"  # a list of hand-pushed messages, good and bad
# What the claim answers (claim_task.lua): a nested list with the task's HGETALL inside; and
# the shapes a script can return that a parser may map differently: nil in a list (false),
# status and error tables, an empty list, a float (truncated by Redis), a negative integer.
NESTED = (
    "return {1, 'accepted', 'RUNNING', 1, redis.call('HGETALL', KEYS[1]),"
    " {3, {'four', false}}, {}, redis.status_reply('OK'), 3.7, -5, ''}"
)


def test_the_pools_connections_parse_with_hiredis_and_write_back_bytes_that_are_not_utf8(
    redis_url,
):
    # Given the roles' pool, and a message that is not UTF-8 pushed by hand onto a list
    client = redis_client(redis_url)
    client.lpush(keys.PENDING_QUEUE, NOT_UTF8)
    connection = client.connection_pool.get_connection()
    try:
        assert isinstance(connection._parser, _HiredisParser)
        assert isinstance(connection._command_packer, PythonRespSerializer)
    finally:
        client.connection_pool.release(connection)

    # When a reader takes it as text (as an agent dead-letters it) and writes that text back
    (raw,) = client.lrange(keys.PENDING_QUEUE, 0, -1)
    text = as_text(raw)
    client.rpush(keys.DEAD_LETTER, text)
    removed = client.lrem(keys.PENDING_QUEUE, 1, text)
    echoed = client.eval("return ARGV[1]", 0, text)

    # Then Redis holds and matches the very same bytes: removed by value, moved intact
    assert raw == NOT_UTF8
    assert removed == 1
    assert client.lrange(keys.DEAD_LETTER, 0, -1) == [NOT_UTF8]
    assert echoed == NOT_UTF8


def _same(value: object) -> object:
    """A reply made comparable: an error inside it (a pipeline's, a script's) by class and
    text, since two exception objects are never equal."""
    if isinstance(value, Exception):
        return (type(value), str(value))
    if isinstance(value, list | tuple):
        return type(value)(_same(v) for v in value)
    if isinstance(value, dict):
        return {k: _same(v) for k, v in value.items()}
    return value


def _outcome(call: Callable[[], object]) -> tuple:
    try:
        return ("answered", _same(call()))
    except RedisError as exc:
        return ("raised", type(exc), str(exc))


def _pipeline(client: Redis, task_key: str) -> list:
    """The manager's shape: reads and EVALSHA writes in one pipeline, errors left in place."""
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(task_key)
    pipe.evalsha("0" * 40, 0)  # NOSCRIPT: the manager looks for NoScriptError in the replies
    pipe.lpush(task_key, "x")  # WRONGTYPE
    pipe.get("absent")
    pipe.lrange(MESSAGES, 0, -1)
    return pipe.execute(raise_on_error=False)


def _transaction(client: Redis, task_key: str) -> list:
    pipe = client.pipeline(transaction=True)
    pipe.evalsha("0" * 40, 0)
    pipe.hget(task_key, "status")
    pipe.incr(task_key)
    return pipe.execute(raise_on_error=False)


SHAPES: dict[str, Callable[[Redis, str, str], object]] = {
    "HGETALL of a task": lambda c, t, _: c.hgetall(t),
    "HGETALL of nothing": lambda c, t, _: c.hgetall("absent"),
    "HMGET with a missing field": lambda c, t, _: c.hmget(t, ["status", "absent"]),
    "GET of nothing": lambda c, t, _: c.get("absent"),
    "LRANGE with bytes that are not UTF-8": lambda c, t, _: c.lrange(MESSAGES, 0, -1),
    "BLMOVE that times out": lambda c, t, _: c.blmove("absent", "absent2", 0.1),
    "INCRBY": lambda c, t, _: c.incrby("counter", 0),
    "ZSCORE": lambda c, t, _: c.zscore(keys.TASK_INDEX, "member"),
    "ZRANGE WITHSCORES": lambda c, t, _: c.zrange(keys.TASK_INDEX, 0, -1, withscores=True),
    "SMEMBERS": lambda c, t, _: c.smembers("set"),
    "EVAL of nested replies": lambda c, t, _: c.eval(NESTED, 1, t),
    "EVALSHA of nested replies": lambda c, t, sha: c.evalsha(sha, 1, t),
    "EVAL of nil": lambda c, t, _: c.eval("return nil", 0),
    "EVAL of an error table": lambda c, t, _: c.eval("return {err='refused: reason'}", 0),
    "EVAL of an error inside a list": lambda c, t, _: c.eval("return {1, {err='inner'}}", 0),
    "EVAL of an error that is not UTF-8": lambda c, t, _: c.eval(
        "return {err=ARGV[1]}", 0, NOT_UTF8
    ),
    "EVAL failing inside": lambda c, t, _: c.eval("return redis.call('LPUSH', KEYS[1], 1)", 1, t),
    "EVALSHA of an unknown script": lambda c, t, _: c.evalsha("0" * 40, 0),
    "WRONGTYPE": lambda c, t, _: c.lpush(t, "x"),
    "an unknown command": lambda c, t, _: c.execute_command("NO-SUCH-COMMAND"),
    "BUSYGROUP": lambda c, t, _: c.xgroup_create("stream", "group", id="0"),
    "NOGROUP": lambda c, t, _: c.xreadgroup("no-group", "c", {"stream": ">"}),
    "XAUTOCLAIM": lambda c, t, _: c.xautoclaim("stream", "group", "c", 0, "0-0"),
    "XPENDING": lambda c, t, _: c.xpending("stream", "group"),
    "a pipeline with errors in it": lambda c, t, _: _pipeline(c, t),
    "a transaction with errors in it": lambda c, t, _: _transaction(c, t),
    "CONFIG GET": lambda c, t, _: c.config_get("appendfsync"),
    "INFO persistence": lambda c, t, _: c.info("persistence")["aof_enabled"],
}


@pytest.fixture
def shaped(redis_url) -> tuple[str, str, Redis]:
    """A task's hash written by the real store, and every other key the shapes read."""
    client = redis_client(redis_url)
    task, _ = TaskClient(RedisTaskStore(client)).submit({"taskType": "SHELL", "payload": "true"})
    client.lpush(MESSAGES, NOT_UTF8, b"plain")
    client.zadd(keys.TASK_INDEX, {"member": 1.25})
    client.sadd("set", "a", "b")
    client.xadd("stream", {"field": "value"}, id="1-1")
    client.xgroup_create("stream", "group", id="0")
    client.xreadgroup("group", "c", {"stream": ">"})
    return keys.task(task.task_id), client.script_load(NESTED), client


@pytest.mark.parametrize("shape", SHAPES)
def test_hiredis_answers_each_reply_the_code_relies_on_as_the_python_parser_did(
    redis_url, shaped, shape
):
    # Given the roles' pool (hiredis) and a client alike but for redis-py's Python parser
    task_key, sha, roles = shaped
    python = new_redis_client(redis_url, parser_class=_RESP3Parser)
    call = SHAPES[shape]
    try:
        # When each sends the same command
        expected = _outcome(lambda: call(python, task_key, sha))
        got = _outcome(lambda: call(roles, task_key, sha))
    finally:
        python.close()
    # Then the answers are equal: the same types and values, the same error classes and texts
    assert got == expected


def test_the_replies_that_except_clauses_and_isinstance_checks_name_keep_their_classes(shaped):
    # Given the roles' pool
    task_key, _, client = shaped
    # When a script is unknown, or a command meets a key of another type
    # Then: NoScriptError (the manager reloads its script on it, common/messaging/manager.py),
    # a ResponseError for WRONGTYPE, raised or left in a pipeline's replies
    with pytest.raises(NoScriptError):
        client.evalsha("0" * 40, 0)
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        client.lpush(task_key, "x")
    _, noscript, wrongtype, absent, pending = _pipeline(client, task_key)
    assert isinstance(noscript, NoScriptError)
    assert isinstance(wrongtype, ResponseError) and "WRONGTYPE" in str(wrongtype)
    assert absent is None
    assert pending == [b"plain", NOT_UTF8]


@pytest.fixture
def paused_redis(tmp_path):
    """A Redis of this test's own, so pausing it stops nobody else's test."""
    service = RedisService(appendonly=False)
    running = service.start(tmp_path)
    yield running
    os.kill(running.pid, signal.SIGCONT)  # in case the test failed while it was paused
    service.stop(running)


def test_a_paused_redis_ends_a_call_with_a_timeout_error_and_the_pool_works_after_it(
    paused_redis,
):
    # Given the roles' client, its socket timeout shortened to keep the test short (the pool
    # makes its connections from these options, none made yet)
    client = new_redis_client(paused_redis.env["TASKLAB_REDIS_URL"])
    client.connection_pool.connection_kwargs["socket_timeout"] = 0.5
    client.set("kept", NOT_UTF8)
    # When Redis is paused (SIGSTOP) during a call
    os.kill(paused_redis.pid, signal.SIGSTOP)
    try:
        # Then the call gives up with redis-py's TimeoutError (a RedisError the roles catch)
        with pytest.raises(RedisTimeoutError):
            client.get("kept")
    finally:
        os.kill(paused_redis.pid, signal.SIGCONT)
    # And once Redis runs again, the next call on the same pool answers
    assert client.get("kept") == NOT_UTF8
    client.close()
