"""OneLineErrors: whatever escapes a command ends as one `error:` line and an exit code."""

import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from common.cli.errors import OneLineErrors, describe, one_line
from common.config import ConfigError
from common.domain.task import TaskValidationError


def app_raising(exc: Exception) -> OneLineErrors:
    app = OneLineErrors(add_completion=False, pretty_exceptions_enable=False)

    @app.command()
    def boom() -> None:
        raise exc

    @app.command()
    def fine() -> None:
        pass

    return app


def run(app: OneLineErrors, *args: str) -> int:
    with pytest.raises(SystemExit) as exited:
        app(list(args), prog_name="tasklab")
    return exited.value.code


def test_an_unexpected_error_is_one_line_exit_1_and_logged_with_its_traceback(capsys, caplog):
    with caplog.at_level(logging.ERROR, logger="tasklab.cli"):
        code = run(app_raising(RuntimeError("oops\nsecond line")), "boom")
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [
        "error: unexpected RuntimeError: oops second line (TASKLAB_TRACEBACK=1 shows where)"
    ]
    [record] = caplog.records
    assert record.exc_info and record.exc_info[0] is RuntimeError


def test_bad_input_is_exit_2_and_not_logged_as_a_crash(capsys, caplog):
    with caplog.at_level(logging.ERROR, logger="tasklab.cli"):
        code = run(app_raising(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")), "boom")
    assert code == 2
    assert capsys.readouterr().err.startswith("error: input is not valid UTF-8 (")
    assert not caplog.records


def test_a_command_that_succeeds_exits_0(capsys):
    assert run(app_raising(RuntimeError()), "fine") == 0
    assert capsys.readouterr().err == ""


def test_tasklab_traceback_lets_the_exception_through(monkeypatch):
    monkeypatch.setenv("TASKLAB_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="oops"):
        app_raising(RuntimeError("oops"))(["boom"], prog_name="tasklab")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), 2),
        (UnicodeEncodeError("utf-8", "\udcff", 0, 1, "surrogates not allowed"), 2),
        (TaskValidationError(["payload: is required", "taskType: is required"]), 2),
        (ConfigError("invalid configuration: x"), 2),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:1.\nConnection refused."), 1),
        (KeyError("missing"), 1),
        (ZeroDivisionError("division by zero"), 1),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_every_escaping_exception_becomes_one_line_and_an_exit_code(exc, code):
    message, got = describe(exc)
    assert got == code
    assert "\n" not in one_line(message) and one_line(message).isprintable()


def test_one_line_folds_line_breaks_and_escapes_what_cannot_be_printed():
    assert one_line("a\nb\r\n  c") == "a b c"
    assert one_line("bad \udcff byte") == "bad \\udcff byte"
