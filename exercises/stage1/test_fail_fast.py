"""Exercise 1.2, stop retrying what cannot succeed.

A shell exits 127 when the command is not found and 126 when it cannot be executed. Retrying
such a task only burns its retries (and the backoff delays the error the user needs to see).
Change `decide()` in common/domain/outcome.py so that these two exit codes end the task FAILED
at once, even with retries left, with an error that says it was not retried; every other
failure is retried as before. A pure function: no services (`make exercise-stage1`).
"""

from __future__ import annotations

import pytest

from common.domain import outcome
from common.domain.backoff import ExponentialBackoff
from common.domain.outcome import AttemptReport, Verdict
from common.domain.transitions import TaskStatus


def decide(exit_code: int, retries_used: int = 0, retry_count: int = 3):
    report = AttemptReport(success=False, exit_code=exit_code, error=f"exit code {exit_code}")
    # outcome.decide, looked up when called: the function as the learner left it.
    return outcome.decide(
        report,
        retries_used=retries_used,
        retry_count=retry_count,
        backoff=ExponentialBackoff(jitter=False),
        finished_at=1.0,
    )


@pytest.mark.parametrize(("exit_code", "meaning"), [(127, "not found"), (126, "not executable")])
def test_a_command_that_cannot_run_fails_at_once_even_with_retries_left(exit_code, meaning):
    decision = decide(exit_code)
    assert decision.verdict == Verdict.FAILED, (
        f"exit code {exit_code} (command {meaning}) was {decision.verdict.value}: "
        "it can never succeed on a retry"
    )
    assert decision.to == TaskStatus.FAILED
    assert "not retried" in decision.reason, "say in the error why the retries were not used"
    assert decision.fields["exitCode"] == str(exit_code)


def test_a_command_not_found_fails_at_once_and_other_failures_are_still_retried():
    assert decide(127).verdict == Verdict.FAILED
    assert decide(1).verdict == Verdict.RETRY, "an ordinary failure keeps its retries"
    assert decide(1, retries_used=3).verdict == Verdict.FAILED
