"""The one JSON log line every role writes: its keys, its RFC 3339 time, its bound context."""

import json
import logging
import re
import threading
from datetime import datetime

import pytest

from common.observability.logging import (
    JsonFormatter,
    TextFormatter,
    bind,
    context_filter,
    rfc3339,
    set_identity,
)

RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def lines():
    """A logger whose records are formatted as a role's JSON lines, kept in a list."""
    written: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            written.append(self.format(record))

    handler = Keep()
    handler.setFormatter(JsonFormatter())
    handler.addFilter(context_filter())
    logger = logging.getLogger("tasklab.test-format")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    set_identity("agent", "agent-2")
    yield logger, written
    set_identity()
    logger.removeHandler(handler)


def test_a_line_has_every_key_of_the_format_in_camel_case(lines):
    logger, written = lines
    with bind(taskId="t-1", agentId="a-1", attempt=2, epoch=7, traceId="ab" * 16, spanId="cd" * 8):
        logger.warning("task %s", "SUCCESS")
    entry = json.loads(written[-1])
    assert list(entry)[:6] == ["ts", "level", "logger", "msg", "role", "process"]
    assert entry == {
        "ts": entry["ts"],
        "level": "WARNING",
        "logger": "tasklab.test-format",
        "msg": "task SUCCESS",
        "role": "agent",
        "process": "agent-2",
        "taskId": "t-1",
        "agentId": "a-1",
        "attempt": "2",
        "epoch": "7",
        "traceId": "ab" * 16,
        "spanId": "cd" * 8,
    }


def test_ts_is_rfc3339_in_utc_with_milliseconds():
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(1764477001.1239) == "2025-11-30T04:30:01.123Z"
    stamp = rfc3339(1764477001.5)
    assert RFC3339_MS.match(stamp)
    assert datetime.fromisoformat(stamp).timestamp() == 1764477001.5


def test_a_line_written_outside_a_task_carries_no_task_keys(lines):
    logger, written = lines
    logger.info("agent started")
    entry = json.loads(written[-1])
    assert RFC3339_MS.match(entry["ts"])
    assert not {"taskId", "agentId", "attempt", "epoch", "exc"} & set(entry)


def test_a_traceback_is_one_exc_field_and_the_line_stays_one_line(lines):
    logger, written = lines
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    assert "\n" not in written[-1]
    entry = json.loads(written[-1])
    assert entry["msg"] == "failed"
    assert entry["exc"].startswith("Traceback") and "RuntimeError: boom" in entry["exc"]


def test_role_and_process_hold_in_threads_the_context_does_not_reach(lines):
    logger, written = lines
    with bind(taskId="t-2"):
        thread = threading.Thread(target=lambda: logger.info("from a thread"))
        thread.start()
        thread.join(5)
    entry = json.loads(written[-1])
    assert (entry["role"], entry["process"]) == ("agent", "agent-2")
    assert "taskId" not in entry


def test_the_text_form_leaves_out_what_every_line_of_the_process_shares(lines):
    logger, _ = lines
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "hi", (), None)
    record.ctx = {"role": "agent", "process": "agent-2", "taskId": "t-3"}
    text = TextFormatter().format(record)
    assert text.endswith("hi  [taskId=t-3]")
