"""Structured logs with task/agent context: JSON for machines, one readable line for people.

`bind(taskId=..., agentId=...)` puts context in a contextvar, so every log line written while
a task runs carries its taskId without threading it through every call.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time

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


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ctx = _context.get() or {}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **getattr(record, "ctx", {}),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%H:%M:%S", time.localtime(record.created))
        ms = int(record.msecs)
        ctx = " ".join(f"{k}={v}" for k, v in getattr(record, "ctx", {}).items())
        line = f"{ts}.{ms:03d} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if ctx:
            line += f"  [{ctx}]"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kazoo warns on every failed connection attempt (dozens while ZooKeeper is down); the
    # platform logs the session states that matter (SUSPENDED, LOST) itself.
    logging.getLogger("kazoo").setLevel(max(logging.ERROR, root.level))
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name)
