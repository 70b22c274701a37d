"""Structured logs with task/agent context: JSON for machines, one readable line for people.

`bind(taskId=..., agentId=...)` puts context in a contextvar, so every log line written while
a task runs carries its taskId without threading it through every call.

One JSON object per line, the same keys on every role (camelCase, as the task's fields):
`ts` (RFC 3339, UTC, milliseconds), `level`, `logger`, `msg`, `role`, `process`, then whatever
is bound where the line is written (`taskId`, `agentId`, `attempt`, `epoch`, `traceId`,
`spanId`), and `exc` with a traceback. `role` and `process` are the process's identity, set
once by `tasklab run ROLE` (configure_logging): they hold in every thread, which a contextvar
would not (a new thread starts with an empty context).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import sys
import time
from datetime import UTC, datetime

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "tasklab_log", default=None
)


@contextlib.contextmanager
def bind(**fields: object):
    token = _context.set({**(_context.get() or {}), **{k: str(v) for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _context.reset(token)


# The process's identity on every line: {"role": ..., "process": ...}; empty outside a role.
_identity: dict[str, str] = {}


def set_identity(role: str = "", process: str = "") -> None:
    """Name the role and the process on every line from now on (all threads)."""
    _identity.clear()
    _identity.update({k: v for k, v in (("role", role), ("process", process)) if v})


def current_context() -> dict[str, str]:
    """The identity and what is bound here, as a line written now would carry them."""
    return {**_identity, **(_context.get() or {})}


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Set once per record: a second handler (the log shipper) sees the same context.
        if not hasattr(record, "ctx"):
            record.ctx = current_context()
        return True


# The formatted second of the last line: a process logs many lines per second, and strftime
# is most of what a timestamp costs. A (second, text) pair, replaced whole, so any thread
# reads a consistent one.
_last_second: tuple[float, str] = (float("nan"), "")


def rfc3339(created: float) -> str:
    """2026-11-30T04:30:01.123Z: RFC 3339 in UTC, whole milliseconds (truncated, as %f)."""
    global _last_second
    # The microseconds as datetime.fromtimestamp rounds them, carried into the next second
    # when they round up to a whole one: the same text as formatting the datetime.
    fraction, whole = math.modf(created)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second, text = _last_second
    if second != whole:
        text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = (whole, text)
    return f"{text}{micros // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "ctx", current_context()),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        ms = int(record.msecs)
        # role and process are the same on every line of a process: left out of the text form.
        ctx = " ".join(
            f"{k}={v}"
            for k, v in getattr(record, "ctx", {}).items()
            if k not in ("role", "process")
        )
        line = f"{ts}.{ms:03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if ctx:
            line += f"  [{ctx}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def context_filter() -> logging.Filter:
    """The filter that puts the bound context on a record; every tasklab handler has one."""
    return _ContextFilter()


def configure_logging(
    level: str = "INFO", fmt: str = "auto", role: str = "", process: str = ""
) -> None:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    set_identity(role, process)
    # Nothing tasklab formats or ships reads a record's source file and line, its thread or
    # its process name: the logging manual's "Optimization" switches stop working them out
    # on every record (the caller's frame walk is most of a record's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in root.handlers:
        # A log shipper configured before (tests call this more than once) flushes and ends.
        if old is not handler and getattr(old, "ships_logs", False):
            old.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kazoo warns on every failed connection attempt (dozens while ZooKeeper is down); the
    # platform logs the session states that matter (SUSPENDED, LOST) itself.
    logging.getLogger("kazoo").setLevel(max(logging.ERROR, root.level))
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
