"""`tasklab logs --all`'s LogsQL and its readable lines, without a store."""

import pytest

from common.cli.backend import CliError
from common.cli.logstore import as_logged, build_query, millis, readable


def test_the_query_filters_on_task_role_and_time_and_returns_the_newest_first():
    query = build_query("t-1", "agent", "10m", 1000)
    assert query == '_time:600s taskId:="t-1" role:="agent" | sort by (_time desc) | limit 1000'


def test_a_task_id_cannot_end_its_filter_early():
    query = build_query('x" or role:="api', None, None, 5)
    assert query == 'taskId:="x\\" or role:=\\"api" | sort by (_time desc) | limit 5'


def test_no_filter_is_every_line_up_to_the_limit():
    assert build_query(None, None, None, 10) == "* | sort by (_time desc) | limit 10"


def test_a_since_that_is_no_duration_is_a_usage_error():
    with pytest.raises(CliError) as caught:
        build_query("t-1", None, "ten minutes", 10)
    assert caught.value.code == 2 and "--since 'ten minutes'" in str(caught.value)


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("2026-11-30T04:30:01.1Z", "2026-11-30T04:30:01.100Z"),
        ("2026-11-30T04:30:01Z", "2026-11-30T04:30:01.000Z"),
        ("2026-11-30T04:30:01.123456789Z", "2026-11-30T04:30:01.123Z"),
    ],
)
def test_the_stores_times_are_shown_with_three_decimals_as_the_roles_wrote_them(stored, shown):
    assert millis(stored) == shown


def test_a_stored_line_reads_back_with_the_keys_the_role_wrote_and_one_readable_line():
    stored = {
        "_msg": "task SUCCESS in 0.004s",
        "_stream": '{process="agent-1",role="agent"}',
        "_stream_id": "0000",
        "_time": "2026-11-30T04:30:01.12Z",
        "level": "INFO",
        "logger": "tasklab.agent",
        "process": "agent-1",
        "role": "agent",
        "taskId": "t-1",
    }
    line = as_logged(stored)
    assert list(line)[:6] == ["ts", "level", "logger", "msg", "role", "process"]
    assert line == {
        "ts": "2026-11-30T04:30:01.120Z",
        "msg": "task SUCCESS in 0.004s",
        "level": "INFO",
        "logger": "tasklab.agent",
        "process": "agent-1",
        "role": "agent",
        "taskId": "t-1",
    }
    assert readable(line) == (
        "2026-11-30T04:30:01.120Z  agent-1                  INFO    task SUCCESS in 0.004s"
    )
    with_exc = readable({**line, "exc": "Traceback ...\nRuntimeError: boom"})
    assert with_exc.endswith("(RuntimeError: boom)")
