"""Cron parsing, fire times across DST, the schedule document, and Kubernetes' CronJob rules."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain.schedule import (
    ConcurrencyPolicy,
    CronError,
    Run,
    Skip,
    decide_fires,
    iter_fires,
    next_fires,
    parse_cron,
    run_id,
    runs_to_delete,
    validate_schedule,
    zone_of,
)
from common.domain.task import TaskValidationError

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def ts(text: str, zone: ZoneInfo = UTC_ZONE) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


def local(t: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(t, zone).strftime("%Y-%m-%d %H:%M %Z")


def doc(**over) -> dict:
    base = {
        "name": "nightly",
        "schedule": "*/5 * * * *",
        "task": {"taskType": "SHELL", "payload": "echo hi"},
    }
    base.update(over)
    return base


def spec(**over):
    return validate_schedule(doc(**over))


# -- parsing -----------------------------------------------------------------------------------
def test_a_field_takes_lists_ranges_steps_and_names():
    cron = parse_cron("0,30 9-17/4 * jan-mar,DEC mon-fri")
    assert cron.minutes == {0, 30}
    assert cron.hours == {9, 13, 17}
    assert cron.months == {1, 2, 3, 12}
    assert cron.weekdays == {1, 2, 3, 4, 5}


def test_a_start_with_a_step_runs_to_the_end_of_the_range_and_seven_is_sunday():
    cron = parse_cron("5/20 * * * 7")
    assert cron.minutes == {5, 25, 45}
    assert cron.weekdays == {0}


def test_macros_are_the_expressions_they_stand_for():
    assert parse_cron("@hourly").minutes == {0}
    assert parse_cron("@daily").hours == {0}
    assert parse_cron("@weekly").weekdays == {0}
    assert parse_cron("@yearly").months == {1}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "has 4 field(s); cron has five"),
        ("60 * * * *", "minute: 60 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range 0-23"),
        ("* * 0 * *", "day of month: 0 is out of range 1-31"),
        ("* * * foo *", "month: 'foo' is not a number or a name"),
        ("*/0 * * * *", "minute: step '0' must be a positive number"),
        ("5-1 * * * *", "minute: range '5-1' runs backwards"),
        ("? * * * *", "minute: '?' is only for the day fields"),
        ("1,,2 * * * *", "minute: empty item"),
        ("@every 5m", "unknown macro"),
    ],
)
def test_a_bad_expression_names_its_field_and_why(expression, message):
    with pytest.raises(CronError, match=re.escape(message)):
        parse_cron(expression)


# -- fire times --------------------------------------------------------------------------------
def test_fire_times_are_strictly_after_the_given_time():
    cron = parse_cron("*/15 * * * *")
    fires = next_fires(cron, UTC_ZONE, ts("2026-01-01T10:15:00"), 3)
    assert [local(f, UTC_ZONE) for f in fires] == [
        "2026-01-01 10:30 UTC",
        "2026-01-01 10:45 UTC",
        "2026-01-01 11:00 UTC",
    ]


def test_day_of_month_and_day_of_week_both_restricted_match_either():
    # 13 March 2026 is a Friday; the OR rule fires on every Friday and on every 13th.
    fires = next_fires(parse_cron("0 0 13 * 5"), UTC_ZONE, ts("2026-03-01T00:00:00"), 4)
    assert [local(f, UTC_ZONE)[:10] for f in fires] == [
        "2026-03-06",
        "2026-03-13",
        "2026-03-20",
        "2026-03-27",
    ]


def test_a_day_field_written_as_a_star_makes_the_other_one_decide():
    fires = next_fires(parse_cron("0 0 * * 1"), UTC_ZONE, ts("2026-03-01T00:00:00"), 2)
    assert [local(f, UTC_ZONE)[:10] for f in fires] == ["2026-03-02", "2026-03-09"]


def test_a_time_zone_fires_at_local_wall_clock_time():
    (fire,) = next_fires(parse_cron("30 9 * * *"), BERLIN, ts("2026-07-01T00:00:00"), 1)
    assert local(fire, BERLIN) == "2026-07-01 09:30 CEST"
    assert local(fire, UTC_ZONE) == "2026-07-01 07:30 UTC"


def test_a_fire_time_in_the_spring_forward_gap_is_skipped():
    # 29 March 2026 in Berlin: 02:00 jumps to 03:00, so 02:30 does not exist that day.
    fires = next_fires(parse_cron("30 2 * * *"), BERLIN, ts("2026-03-28T03:00:00", BERLIN), 2)
    assert [local(f, BERLIN) for f in fires] == ["2026-03-30 02:30 CEST", "2026-03-31 02:30 CEST"]


def test_a_fire_time_the_fall_back_overlap_shows_twice_fires_once():
    # 25 October 2026 in Berlin: 03:00 goes back to 02:00, so 02:30 happens twice.
    fires = next_fires(parse_cron("30 2 * * *"), BERLIN, ts("2026-10-24T12:00:00", BERLIN), 2)
    assert [local(f, BERLIN) for f in fires] == ["2026-10-25 02:30 CEST", "2026-10-26 02:30 CET"]


def test_every_fifteen_minutes_across_the_overlap_fires_each_wall_time_once():
    start = ts("2026-11-01T00:50:00", NEW_YORK)  # New York falls back at 02:00 EDT
    fires = next_fires(parse_cron("*/15 1 * * *"), NEW_YORK, start, 5)
    assert [local(f, NEW_YORK) for f in fires] == [
        "2026-11-01 01:00 EDT",
        "2026-11-01 01:15 EDT",
        "2026-11-01 01:30 EDT",
        "2026-11-01 01:45 EDT",
        "2026-11-02 01:00 EST",
    ]


def test_inside_the_second_pass_of_an_overlap_the_wall_times_fired_in_the_first_are_not_again():
    second_pass = datetime(2026, 11, 1, 1, 20, tzinfo=NEW_YORK, fold=1).timestamp()
    (fire,) = next_fires(parse_cron("*/15 * * * *"), NEW_YORK, second_pass, 1)
    assert fire > second_pass
    # 01:30 and 01:45 fired during the first pass (EDT): the next is 02:00 EST.
    assert local(fire, NEW_YORK) == "2026-11-01 02:00 EST"


def test_an_expression_that_never_fires_ends_its_fire_times():
    assert next_fires(parse_cron("0 0 30 2 *"), UTC_ZONE, 0.0, 1) == []


def test_the_twenty_ninth_of_february_is_found_years_ahead():
    (fire,) = next_fires(parse_cron("0 0 29 2 *"), UTC_ZONE, ts("2026-03-01T00:00:00"), 1)
    assert local(fire, UTC_ZONE) == "2028-02-29 00:00 UTC"


EXPRESSIONS = st.builds(
    lambda m, h, d: f"{m} {h} {d} * *",
    st.sampled_from(["*", "*/7", "0", "5,35", "10-20/5"]),
    st.sampled_from(["*", "*/5", "2", "1-3"]),
    st.sampled_from(["*", "1", "15", "28-31"]),
)
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"])


@settings(max_examples=60, deadline=None)
@given(EXPRESSIONS, ZONES, st.integers(1_700_000_000, 1_900_000_000))
def test_fire_times_increase_match_the_fields_and_exist_on_the_wall_clock(expr, zone, after):
    cron, tz = parse_cron(expr), ZoneInfo(zone)
    fires = next_fires(cron, tz, after, 6)
    assert fires
    assert all(a < b for a, b in zip([after, *fires], fires, strict=False))
    for f in fires:
        wall = datetime.fromtimestamp(f, tz)
        assert wall.minute in cron.minutes and wall.hour in cron.hours and wall.day in cron.days
        assert wall.second == 0


@settings(max_examples=40, deadline=None)
@given(EXPRESSIONS, ZONES, st.integers(1_700_000_000, 1_900_000_000))
def test_no_fire_time_is_skipped_between_two_consecutive_ones(expr, zone, after):
    # Asking again from just before each fire time finds that same time: none is jumped over.
    cron, tz = parse_cron(expr), ZoneInfo(zone)
    fires = next_fires(cron, tz, after, 4)
    for f in fires:
        assert next_fires(cron, tz, f - 1, 1) == [f]


# -- the document ------------------------------------------------------------------------------
def test_a_document_takes_the_kubernetes_defaults():
    s = spec()
    assert s.time_zone == "UTC"
    assert s.concurrency_policy == ConcurrencyPolicy.ALLOW
    assert s.starting_deadline_seconds is None
    assert (s.successful_jobs_history_limit, s.failed_jobs_history_limit) == (3, 1)
    assert s.suspend is False


def test_a_bad_document_lists_every_problem_with_its_path():
    with pytest.raises(TaskValidationError) as err:
        validate_schedule(
            {
                "name": "Nightly Backup",
                "schedule": "61 * * * *",
                "timeZone": "Mars/Olympus",
                "concurrencyPolicy": "Sometimes",
                "startingDeadlineSeconds": -1,
                "suspend": "yes",
                "task": {"taskType": "FORTRAN", "payload": " ", "requestId": "r1"},
                "extra": 1,
            }
        )
    problems = err.value.problems
    joined = "\n".join(problems)
    for expected in [
        "name: 'Nightly Backup' must be lower-case",
        "schedule: minute: 61 is out of range 0-59",
        "timeZone: unknown time zone 'Mars/Olympus'",
        "concurrencyPolicy: must be one of Allow, Forbid, Replace",
        "startingDeadlineSeconds: Input should be greater than or equal to 0",
        "suspend: must be true or false",
        "task.taskType: must be one of",
        "task.payload: must not be blank",
        "task.requestId: each run's id derives from its fire time",
        "extra: unknown field",
    ]:
        assert expected in joined, (expected, problems)


def test_a_document_missing_its_parts_names_each():
    with pytest.raises(TaskValidationError) as err:
        validate_schedule({})
    assert set(err.value.problems) >= {
        "name: is required",
        "schedule: is required",
        "task: is required",
    }


def test_an_expression_that_never_fires_is_refused():
    with pytest.raises(TaskValidationError, match="never fires"):
        validate_schedule(doc(schedule="0 0 31 2 *"))


def test_a_zone_name_cannot_reach_outside_the_zone_database():
    with pytest.raises(CronError):
        zone_of("../../etc/passwd")


def test_a_run_id_is_the_same_for_the_same_schedule_and_fire_time_and_differs_otherwise():
    uid = "8d3c1f0e-0000-4000-8000-000000000001"
    assert run_id(uid, 1_800_000_000) == run_id(uid, 1_800_000_000.0)
    assert run_id(uid, 1_800_000_000) != run_id(uid, 1_800_000_060)
    assert run_id(uid, 1_800_000_000) != run_id(
        "8d3c1f0e-0000-4000-8000-000000000002", 1_800_000_000
    )


# -- decide_fires ---------------------------------------------------------------------------------
T0 = ts("2026-05-01T10:00:00")  # a fire time of "*/5 * * * *"


def test_the_first_fire_time_after_creation_fires_when_it_comes():
    s = spec()
    assert decide_fires(s, T0 - 30, None, T0 - 1, []).fire_at is None
    plan = decide_fires(s, T0 - 30, None, T0 + 2, [])
    assert (plan.fire_at, plan.missed, plan.skipped) == (T0, 1, None)
    assert plan.next_check == T0 + 300


def test_a_fire_time_recorded_does_not_fire_again():
    plan = decide_fires(spec(), T0 - 30, T0, T0 + 2, [])
    assert plan.fire_at is None
    assert plan.next_check == T0 + 300


def test_after_downtime_only_the_most_recent_missed_time_runs_and_the_rest_are_counted():
    plan = decide_fires(spec(), T0 - 30, T0, T0 + 3 * 300 + 10, [])
    assert plan.fire_at == T0 + 900
    assert plan.missed == 3


def test_a_starting_deadline_covers_only_the_times_within_it():
    s = spec(startingDeadlineSeconds=60)
    assert decide_fires(s, T0 - 30, T0, T0 + 900 + 30, []).fire_at == T0 + 900
    late = decide_fires(s, T0 - 30, T0, T0 + 900 + 90, [])
    assert late.fire_at is None
    assert late.missed == 0  # outside the deadline is not even considered, as Kubernetes does


def test_more_than_a_hundred_missed_times_is_a_warning_and_the_most_recent_still_runs():
    s = spec(schedule="* * * * *")
    plan = decide_fires(s, T0 - 30, T0, T0 + 101 * 60 + 5, [])
    assert plan.missed == 101 and plan.too_many_missed
    assert plan.fire_at == T0 + 101 * 60


def test_thousands_missed_are_capped_in_the_count_but_the_most_recent_is_exact():
    s = spec(schedule="* * * * *")
    plan = decide_fires(s, T0 - 30, T0, T0 + 7 * 86400 + 5, [])
    assert plan.missed == 1000
    assert plan.fire_at == T0 + 7 * 86400


def test_a_suspended_schedule_fires_nothing_and_records_nothing():
    plan = decide_fires(spec(suspend=True), T0 - 30, T0, T0 + 610, [])
    assert plan.fire_at is None and plan.skipped == Skip.SUSPENDED


def test_on_resume_the_most_recent_time_missed_while_suspended_runs_within_the_deadline():
    resumed = spec(startingDeadlineSeconds=120)
    assert decide_fires(resumed, T0 - 30, T0, T0 + 900 + 60, []).fire_at == T0 + 900
    assert decide_fires(resumed, T0 - 30, T0, T0 + 900 + 200, []).fire_at is None


def test_forbid_skips_while_a_run_is_active_and_looks_again_soon():
    active = [Run("r1", T0)]
    plan = decide_fires(spec(concurrencyPolicy="Forbid"), T0 - 30, T0, T0 + 301, active)
    assert plan.fire_at is None and plan.skipped == Skip.FORBID
    assert plan.next_check == T0 + 302


def test_forbid_runs_the_skipped_time_late_once_the_run_ended_within_the_deadline():
    s = spec(concurrencyPolicy="Forbid", startingDeadlineSeconds=100)
    assert decide_fires(s, T0 - 30, T0, T0 + 350, []).fire_at == T0 + 300
    assert decide_fires(s, T0 - 30, T0, T0 + 450, []).fire_at is None


def test_replace_cancels_the_active_runs_then_fires():
    active = [Run("r1", T0)]
    plan = decide_fires(spec(concurrencyPolicy="Replace"), T0 - 30, T0, T0 + 301, active)
    assert plan.fire_at == T0 + 300 and plan.cancel == ("r1",)


def test_replace_keeps_cancelling_runs_older_than_the_last_fire_until_they_end():
    # A leader that fired and died before cancelling: the next one sees it and cancels.
    active = [Run("old", T0), Run("new", T0 + 300)]
    plan = decide_fires(spec(concurrencyPolicy="Replace"), T0 - 30, T0 + 300, T0 + 310, active)
    assert plan.fire_at is None and plan.cancel == ("old",)


def test_allow_fires_beside_an_active_run():
    plan = decide_fires(spec(), T0 - 30, T0, T0 + 301, [Run("r1", T0)])
    assert plan.fire_at == T0 + 300 and plan.cancel == ()


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 5000), st.integers(0, 20000), st.sampled_from([None, 0, 30, 600]))
def test_a_fire_time_fires_at_most_once_whenever_the_firer_looks(gap, later, deadline):
    # Whatever the times it looks at, recording each fire it makes, no time fires twice and
    # each fire is a real fire time no later than the look and no older than the deadline.
    s = spec(startingDeadlineSeconds=deadline)
    cron = s.cron
    last, fired = None, []
    for now in (T0 + gap, T0 + gap + later, T0 + gap + later + 7):
        plan = decide_fires(s, T0 - 30, last, now, [])
        if plan.fire_at is not None:
            assert plan.fire_at <= now
            assert last is None or plan.fire_at > last
            assert next_fires(cron, UTC_ZONE, plan.fire_at - 1, 1) == [plan.fire_at]
            if deadline is not None:
                assert plan.fire_at >= now - deadline
            fired.append(plan.fire_at)
            last = plan.fire_at
    assert len(fired) == len(set(fired))


def test_history_keeps_the_newest_successes_and_failures_up_to_their_limits():
    finished = [("s1", 1, True), ("s2", 2, True), ("s3", 3, True), ("s4", 4, True)]
    finished += [("f1", 1, False), ("f2", 2, False)]
    assert sorted(runs_to_delete(finished, 3, 1)) == ["f1", "s1"]
    assert sorted(runs_to_delete(finished, 0, 0)) == ["f1", "f2", "s1", "s2", "s3", "s4"]


def test_iter_fires_is_lazy_for_an_every_minute_expression():
    it = iter_fires(parse_cron("* * * * *"), UTC_ZONE, T0)
    assert [next(it) for _ in range(3)] == [T0 + 60, T0 + 120, T0 + 180]
    assert datetime.fromtimestamp(T0, UTC).minute == 0
