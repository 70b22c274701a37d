"""HANDLER tasks: the payload checked at submit, the registry checked at start-up, and the call
run in a warm worker, a process forked from a warm zygote, or a fresh interpreter, with the
script's guarantees (test_handler_warm_pool.py: what is particular to warm workers).
"""

import json

import pytest

from common.domain.task import (
    Task,
    TaskSpec,
    TaskType,
    TaskValidationError,
    handler_call,
    parse_task_message,
    validate_spec,
)
from common.executors import ExecutorLimits, default_factory
from common.executors.handler import (
    HandlerExecutor,
    HandlerRegistrationError,
    check_handlers,
    handler_modules,
)
from common.testing import eventually, process_alive

EXAMPLES = "common.examples.handlers"
REGISTERED = tuple(f"{EXAMPLES}:{name}" for name in ("add", "echo", "fail", "noop", "sleep"))


def call(handler, timeout=20, **args):
    payload = json.dumps({"handler": f"{EXAMPLES}:{handler}", "args": args})
    spec = TaskSpec(task_type=TaskType.HANDLER, payload=payload, execution_timeout=timeout)
    return Task.new(spec)


@pytest.fixture(
    params=[(True, "warm"), (True, "fork"), (False, "warm")],
    ids=["warm-worker", "fork-per-call", "fresh-interpreter"],
)
def executor(request):
    warm_fork, mode = request.param
    ex = HandlerExecutor(
        ExecutorLimits(kill_grace_seconds=0.5),
        warm_fork=warm_fork,
        handlers=REGISTERED,
        mode=mode,
    )
    yield ex
    ex.close()


def test_a_handler_payload_names_the_function_and_its_keyword_arguments():
    assert handler_call('{"handler": "pkg.mod:run", "args": {"n": 1}}') == ("pkg.mod:run", {"n": 1})
    assert handler_call('{"handler": "mod:run"}') == ("mod:run", {})


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("resize", "payload: must be JSON {"),
        ('["mod:run"]', "payload: must be a JSON object {"),
        ('{"handler": "mod.run"}', 'payload: "handler" must name a function as module:function'),
        ('{"handler": 7}', 'payload: "handler" must name a function as module:function'),
        ('{"handler": "mod:run", "args": [1]}', 'payload: "args" must be a JSON object'),
        ('{"handler": "mod:run", "kwargs": {}}', "payload: unknown key 'kwargs'"),
        ('{"handler": "mod:run", "handler": "x:y"}', "payload: must be JSON {"),
    ],
)
def test_a_malformed_handler_payload_is_refused_at_submit_with_a_payload_error(payload, problem):
    with pytest.raises(TaskValidationError) as err:
        validate_spec({"taskType": "handler", "payload": payload})
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(problem)
    # A message pushed straight onto the queue meets the same check.
    with pytest.raises(TaskValidationError):
        parse_task_message(json.dumps({"taskType": "HANDLER", "payload": payload}))


def test_a_handler_task_is_named_after_its_function_by_default():
    spec = validate_spec({"taskType": "HANDLER", "payload": '{"handler": "billing:charge"}'})
    assert spec.with_default_name().task_name == "billing:charge"


def test_the_registry_accepts_importable_functions_and_preloads_each_module_once():
    check_handlers(REGISTERED)
    assert handler_modules(REGISTERED + ("json:dumps",)) == (EXAMPLES, "json")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("common.examples.handlers.add", "is not module:function"),
        ("no_such_module_here:run", "cannot load no_such_module_here:run: ModuleNotFoundError"),
        (f"{EXAMPLES}:missing", f"cannot load {EXAMPLES}:missing: AttributeError"),
        (f"{EXAMPLES}:os", f"cannot load {EXAMPLES}:os: TypeError: {EXAMPLES}:os is not callable"),
    ],
)
def test_the_registry_refuses_a_handler_it_cannot_call_in_one_line(entry, message):
    with pytest.raises(HandlerRegistrationError) as err:
        check_handlers((f"{EXAMPLES}:add", entry))
    text = str(err.value)
    assert text.startswith("agent_handlers: ") and message in text
    assert "\n" not in text


def test_a_handler_result_is_its_return_value_as_json_and_its_prints_are_log_lines(executor):
    out = executor.run(call("echo", message="hi"))
    assert out.success and out.exit_code == 0
    assert json.loads(out.result) == "hi"
    # The result is not repeated in the log: the log is what the function printed.
    assert out.lines == ["[stderr] echo: hi"]


def test_a_handler_that_raises_fails_with_the_last_line_of_its_traceback(executor):
    out = executor.run(call("fail", message="boom"))
    assert not out.success
    assert out.error == "exit code 1: ValueError: boom"


def test_a_result_json_cannot_carry_fails_the_task_with_the_reason():
    # Any importable function can be registered; set() returns what JSON has no form for.
    ex = HandlerExecutor(handlers=("builtins:set",))
    try:
        task = Task.new(TaskSpec(task_type=TaskType.HANDLER, payload='{"handler": "builtins:set"}'))
        out = ex.run(task)
    finally:
        ex.close()
    assert not out.success and out.result == ""
    assert out.error == "exit code 1: TypeError: Object of type set is not JSON serializable"


def test_a_handler_the_executor_does_not_register_fails_without_starting_a_process():
    ex = HandlerExecutor(handlers=(f"{EXAMPLES}:add",), warm_fork=False)
    out = ex.run(call("echo", message="hi"))
    assert not out.success and out.exit_code is None
    assert out.error == (
        f"unknown handler '{EXAMPLES}:echo': not registered with this agent "
        f"(registered: {EXAMPLES}:add)"
    )


def test_a_timed_out_forked_call_is_killed_and_the_same_zygote_serves_the_next(tmp_path):
    factory = default_factory(
        ExecutorLimits(kill_grace_seconds=0.5), handlers=REGISTERED, handler_mode="fork"
    )
    try:
        factory.warm(1)
        zygote_pid = factory.pool._idle[0].proc.pid
        ex = factory.create(TaskType.HANDLER)
        pidfile = tmp_path / "pid"
        out = ex.run(call("sleep", timeout=1, seconds=60, pidfile=str(pidfile)))
        assert out.timed_out and not out.success
        pid = int(pidfile.read_text())
        eventually(lambda: not process_alive(pid), timeout=5, message="the call was killed")
        assert pid != zygote_pid
        assert json.loads(ex.run(call("add", a=1, b=2)).result) == {"sum": 3}
        assert [z.proc.pid for z in factory.pool._idle] == [zygote_pid]
    finally:
        factory.close()


def test_a_cancelled_call_is_killed(executor, tmp_path):
    pidfile = tmp_path / "pid"
    # Cancelled once the call has started (it writes its pid first thing).
    out = executor.run(
        call("sleep", seconds=60, pidfile=str(pidfile)),
        should_cancel=lambda: pidfile.exists() and bool(pidfile.read_text()),
    )
    assert out.cancelled and not out.success
    pid = int(pidfile.read_text())
    eventually(lambda: not process_alive(pid), timeout=5, message="the call was killed")
