"""Whatever text a payload holds, `run()` returns an ExecutionResult within its deadline.

Hypothesis writes the payloads: any unicode, lone surrogates, NUL bytes, quotes and brackets,
lines hundreds of kilobytes long. They go through the real spawn paths (a zygote's fork for
PYTHON_SCRIPT, its posix_spawn for SHELL). The shell is run with `-n` (read and parse, execute
nothing): the argv takes the same way to the OS, and a fuzzer never runs a random command on
this machine.
"""

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.domain.task import Task, TaskType
from common.executors import (
    ExecutionResult,
    ExecutorLimits,
    PythonScriptExecutor,
    ShellTaskExecutor,
)
from common.executors.zygote import ZygotePool

TIMEOUT = 1
LIMITS = ExecutorLimits(kill_grace_seconds=0.2, output_cap_bytes=4096, max_log_lines=50)
# The deadline, the polite kill's grace, and room for a loaded two-core machine.
WITHIN = TIMEOUT + LIMITS.kill_grace_seconds + 2.0


class ParseOnlyShell(ShellTaskExecutor):
    def prepare(self, task):
        return [self.shell, "-n", "-c", task.payload]


awkward = st.sampled_from(["\0", "\ud800", "\udfff", "\n", "\r", "'", '"', "\\", "(", "$", "`"])
text = st.text(alphabet=st.one_of(st.characters(), awkward), max_size=200)
huge_line = st.builds(
    lambda prefix, char, size: prefix + char * size,
    text,
    st.sampled_from(["x", "\0", "\ud800", "(", "1+", "#"]),
    st.integers(min_value=10_000, max_value=300_000),
)
payloads = st.one_of(text, huge_line)


@pytest.fixture(scope="module")
def executors():
    pool = ZygotePool()
    yield {
        TaskType.SHELL: ParseOnlyShell(LIMITS, pool=pool),
        TaskType.PYTHON_SCRIPT: PythonScriptExecutor(LIMITS, pool=pool),
    }
    pool.close()


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(task_type=st.sampled_from([TaskType.SHELL, TaskType.PYTHON_SCRIPT]), payload=payloads)
def test_run_returns_a_result_within_its_deadline_for_any_payload(executors, task_type, payload):
    task = Task.model_construct(
        task_id="fuzz",
        task_name="fuzz",
        task_type=task_type,
        payload=payload,
        execution_timeout=TIMEOUT,
    )
    started = time.monotonic()

    out = executors[task_type].run(task)

    assert isinstance(out, ExecutionResult)
    assert time.monotonic() - started < WITHIN
    assert out.success or out.error
    assert len(out.result.encode(errors="surrogatepass")) <= LIMITS.output_cap_bytes + 100
