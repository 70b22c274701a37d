"""The capture caps hold while output streams, and the reader's memory stays bounded.

Who reads the pipes: the process that calls `run()` (the agent; here the test process). The
zygote only forks the child and hands it the write ends, so the memory measured is this
process's: its peak RSS (VmHWM) is reset before each run through /proc/self/clear_refs and
read after it.
"""

from pathlib import Path

import pytest

from common.domain.task import Task, TaskSpec, TaskType
from common.executors import ExecutorLimits, default_factory
from common.executors.process import LINE_CUT_MARK

LIMITS = ExecutorLimits(
    output_cap_bytes=64 * 1024,
    max_log_lines=1000,
    max_line_bytes=8 * 1024,
    max_log_bytes=256 * 1024,
    kill_grace_seconds=0.3,
)
# Well under what any one of these floods would cost if it were held: 200 MB.
MAX_RSS_GROWTH = 24 * 1024 * 1024
MARK = len(LINE_CUT_MARK.encode())


def task(task_type, payload, timeout=60):
    return Task.new(TaskSpec(task_type=task_type, payload=payload, execution_timeout=timeout))


@pytest.fixture(scope="module")
def factory():
    factory = default_factory(LIMITS)
    yield factory
    factory.close()


def _status(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"{field} not in /proc/self/status")


def run_measured(factory, the_task, on_line=None):
    """Run `the_task`; returns (result, how far this process's peak RSS rose above its RSS)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status("VmRSS")
    out = factory.create(the_task.task_type).run(the_task, on_line=on_line)
    growth = _status("VmHWM") - before
    print(f"peak RSS growth {growth / 1e6:.1f} MB")
    return out, growth


def assert_within_caps(out, lines_seen=()):
    assert len(out.result.encode()) <= LIMITS.output_cap_bytes + len("\n[output truncated]")
    assert len(out.lines) <= LIMITS.max_log_lines
    assert sum(len(line.encode()) for line in out.lines) <= (
        LIMITS.max_log_bytes + len(out.lines) * (LIMITS.max_line_bytes + MARK + 10)
    )
    for line in [*out.lines, *lines_seen]:
        assert len(line.encode()) <= LIMITS.max_line_bytes + MARK + len("[stderr] ")


@pytest.mark.parametrize(
    ("task_type", "payload"),
    [
        (TaskType.SHELL, "head -c 200000000 /dev/zero | tr '\\0' x"),
        (
            TaskType.PYTHON_SCRIPT,
            "import sys\nchunk = 'x' * 1_000_000\n"
            "for _ in range(200):\n    sys.stdout.write(chunk)\n",
        ),
    ],
    ids=["shell", "python"],
)
def test_200_mb_without_a_newline_is_one_cut_line_and_costs_the_reader_no_memory(
    factory, task_type, payload
):
    seen = []

    out, growth = run_measured(factory, task(task_type, payload), lambda s, line: seen.append(line))

    assert out.success, out.error
    assert growth < MAX_RSS_GROWTH
    assert out.result.endswith("[output truncated]")
    assert_within_caps(out, seen)
    assert seen == ["x" * LIMITS.max_line_bytes + LINE_CUT_MARK]
    assert out.lines == seen


def test_a_yes_flood_keeps_the_first_lines_and_the_listener_gets_them_and_one_marker(factory):
    seen = []

    out, growth = run_measured(
        factory, task(TaskType.SHELL, "yes | head -c 200000000"), lambda s, line: seen.append(line)
    )

    assert out.success, out.error
    assert growth < MAX_RSS_GROWTH
    assert_within_caps(out)
    assert out.lines == ["y"] * LIMITS.max_log_lines
    assert seen == out.lines + [f"[log truncated after {LIMITS.max_log_lines} lines]"]
    # 100 million lines are read, not handled one by one: the flood costs the reader little.
    assert out.duration < 20


def test_many_huge_lines_are_each_cut_and_marked(factory):
    payload = "import sys\nfor i in range(40):\n    sys.stdout.write(str(i) * 5_000_000 + '\\n')\n"
    seen = []

    out, growth = run_measured(
        factory, task(TaskType.PYTHON_SCRIPT, payload), lambda s, line: seen.append(line)
    )

    assert out.success, out.error
    assert growth < MAX_RSS_GROWTH
    assert_within_caps(out, seen)
    assert len(seen) == 40
    assert all(line.endswith(LINE_CUT_MARK) for line in seen)
    assert seen[7] == "7" * LIMITS.max_line_bytes + LINE_CUT_MARK
    # 40 lines of 8 KiB are over the log's byte budget: it keeps what fits, in order.
    assert out.lines == seen[: len(out.lines)]
    assert 0 < len(out.lines) < 40


def test_binary_output_is_captured_as_replaced_text_within_the_caps(factory):
    out, growth = run_measured(factory, task(TaskType.SHELL, "head -c 50000000 /dev/urandom"))

    assert out.success, out.error
    assert growth < MAX_RSS_GROWTH
    assert isinstance(out.result, str)
    assert_within_caps(out)


def test_a_line_cut_across_reads_keeps_its_head_and_the_next_line_is_whole():
    factory = default_factory(ExecutorLimits(max_line_bytes=4))
    try:
        out = factory.create(TaskType.SHELL).run(
            task(TaskType.SHELL, "printf abcdefghij; sleep 0.1; printf 'klm\\nxy\\nabcd\\n'")
        )
    finally:
        factory.close()
    assert out.lines == ["abcd" + LINE_CUT_MARK, "xy", "abcd"]
    assert out.result == "abcdefghijklm\nxy\nabcd\n"


def test_a_last_line_without_a_newline_is_still_reported():
    factory = default_factory(ExecutorLimits(max_line_bytes=4))
    try:
        out = factory.create(TaskType.SHELL).run(task(TaskType.SHELL, "printf 'ab\\ncdefg'"))
    finally:
        factory.close()
    assert out.lines == ["ab", "cdef" + LINE_CUT_MARK]
