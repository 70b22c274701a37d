"""Every error of the `tasklab` command is one line on stderr and a non-zero exit code.

Commands turn the errors they expect into a message themselves (`fail`). What escapes a command
anyway (bytes that are not UTF-8 on stdin, a Redis that went away mid-command, a bug) is caught
once, around the whole app, by `OneLineErrors`, instead of in every command: a traceback is for
the person who wrote the code, not for the one who typed the command. `TASKLAB_TRACEBACK=1`
lets a traceback through, for debugging. A role (`tasklab run`) that dies of an unexpected error
also logs it, with its traceback, through its configured log, which is where its operator looks.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

import typer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.config import ConfigError
from common.domain.task import TaskValidationError


def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    # Escapes anything a terminal cannot print (a lone surrogate from undecodable input) and
    # folds line breaks, so the message is exactly one printable line.
    text = message.encode("utf-8", "backslashreplace").decode("utf-8")
    return " ".join(text.split()) or "(no detail)"


# What a user or the environment can cause; anything else is a bug in tasklab.
EXPECTED = (UnicodeError, TaskValidationError, ConfigError, RedisError, LookupError, OSError)


def describe(exc: BaseException) -> tuple[str, int]:
    """(message, exit code) for an exception that reached the top: 2 = bad input or config."""
    if isinstance(exc, UnicodeError):
        return f"input is not valid UTF-8 ({exc})", 2
    if isinstance(exc, TaskValidationError | ConfigError):
        return str(exc), 2
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return f"cannot reach Redis ({exc}); is it running? (`tasklab dev up` starts one)", 1
    if isinstance(exc, RedisError):
        return f"Redis refused the command: {exc}", 1
    if isinstance(exc, LookupError):
        # KeyError's str() is the repr of the key; the argument itself reads better.
        return str(exc.args[0]) if exc.args else type(exc).__name__, 1
    if isinstance(exc, OSError):
        return str(exc), 1
    return f"unexpected {type(exc).__name__}: {exc} (TASKLAB_TRACEBACK=1 shows where)", 1


class OneLineErrors(typer.Typer):
    """A typer app whose uncaught exceptions end as `error: ...` and an exit code."""

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the last line of defence, by design
            if os.environ.get("TASKLAB_TRACEBACK"):
                raise
            message, code = describe(exc)
            if not isinstance(exc, EXPECTED) and logging.getLogger().handlers:
                logging.getLogger("tasklab.cli").error(
                    "stopped by an unexpected error", exc_info=exc
                )
            typer.echo(f"error: {one_line(message)}", err=True)
            sys.exit(code)
