"""The outcome decision: what a finished attempt means, without Redis, clock or process."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from common.domain.backoff import ExponentialBackoff
from common.domain.outcome import AttemptReport, FinalReport, Verdict, decide, judge_final
from common.domain.transitions import TaskStatus

BACKOFF = ExponentialBackoff(base=1.0, maximum=30.0)


def decision(report: AttemptReport, retries_used: int = 0, retry_count: int = 0):
    return decide(
        report,
        retries_used=retries_used,
        retry_count=retry_count,
        backoff=BACKOFF,
        finished_at=1000.0,
    )


def test_a_successful_attempt_is_success_with_its_result_and_no_old_error():
    d = decision(AttemptReport(success=True, exit_code=0, result="hi"))
    assert (d.verdict, d.to) == (Verdict.SUCCESS, TaskStatus.SUCCESS)
    assert d.fields["result"] == "hi" and d.fields["exitCode"] == "0"
    assert "error" in d.clear


# --8<-- [start:retry]
def test_a_failed_attempt_with_retries_left_goes_back_to_pending_after_a_backoff():
    d = decision(AttemptReport(success=False, exit_code=3, error="boom"), 1, 3)
    assert (d.verdict, d.to) == (Verdict.RETRY, TaskStatus.PENDING)
    assert d.fields["retriesUsed"] == "2" and d.fields["error"] == "boom"
    assert 1.0 <= d.retry_delay <= 2.0  # retry 2: between half and all of base * 2
    assert d.reason.startswith("retry 2/3") and "agentId" in d.clear


# --8<-- [end:retry]


def test_a_failed_attempt_without_retries_left_is_failed_with_its_error():
    d = decision(AttemptReport(success=False, error="exit code 1"), 2, 2)
    assert (d.verdict, d.to) == (Verdict.FAILED, TaskStatus.FAILED)
    assert d.fields["error"] == "exit code 1" and d.reason == "exit code 1"


def test_a_failure_without_an_error_text_still_says_failed():
    d = decision(AttemptReport(success=False))
    assert d.fields["error"] == "failed"


def test_a_cancelled_attempt_writes_nothing_the_cancel_was_the_transition():
    d = decision(AttemptReport(success=False, cancelled=True), 0, 5)
    assert d.verdict == Verdict.CANCELLED and not d.writes


# --8<-- [start:superseded]
def test_a_superseded_attempt_writes_nothing_whatever_else_it_says():
    d = decision(AttemptReport(success=True, superseded=True, result="late"))
    assert d.verdict == Verdict.SUPERSEDED and not d.writes


# --8<-- [end:superseded]


@given(
    success=st.booleans(),
    cancelled=st.booleans(),
    superseded=st.booleans(),
    retry_count=st.integers(0, 10),
    data=st.data(),
)
def test_every_decision_is_one_legal_final_move_or_nothing(
    success, cancelled, superseded, retry_count, data
):
    retries_used = data.draw(st.integers(0, retry_count))
    random.seed(0)
    d = decision(
        AttemptReport(success=success, cancelled=cancelled, superseded=superseded),
        retries_used,
        retry_count,
    )
    assert d.to in (None, TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.PENDING)
    if d.to == TaskStatus.PENDING:
        assert retries_used < retry_count and d.retry_delay is not None
    if superseded:
        assert not d.writes


# -- the manager's reading of a final report (stage 3) ---------------------------------------
def judged(status=TaskStatus.RUNNING, attempt=1, agent="a1", reported="SUCCESS", by="a1"):
    return judge_final(
        task_status=status,
        task_attempt=attempt,
        task_agent=agent,
        attempt=1,
        agent=by,
        status=reported,
    )[0]


def test_a_final_report_of_the_running_attempt_from_its_agent_is_applied():
    assert judged() == FinalReport.APPLY


def test_a_final_report_of_a_replaced_attempt_is_stale():
    assert judged(attempt=2) == FinalReport.STALE


def test_a_final_report_for_a_task_already_final_is_a_duplicate():
    for status in (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.CANCELLED):
        assert judged(status=status) == FinalReport.DUPLICATE


def test_a_final_report_whose_running_was_lost_implies_it():
    assert judged(status=TaskStatus.DISPATCHED) == FinalReport.IMPLY_RUNNING


def test_a_final_report_from_another_agent_or_a_cancel_report_for_a_live_task_is_unprocessable():
    assert judged(by="a2") == FinalReport.UNPROCESSABLE
    assert judged(reported="CANCELLED") == FinalReport.UNPROCESSABLE
    assert judged(status=TaskStatus.PENDING) == FinalReport.UNPROCESSABLE
